package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

// A kubelet node of the lab shares the machine with the other nodes, so each
// one gets what a real machine would have to itself (design note 0013):
//
//   - its network namespace (kubelet and containerd are entered into it with
//     nsenter --net, not `ip netns exec`, which would also give them a fresh
//     /sys without the cgroup mounts the kubelet needs);
//   - a persistent mount namespace of its own in which per-node directories
//     are bind-mounted over the paths a node's programs and the install's
//     hostPath volumes use (hostMounts), so a DaemonSet's /etc/cni/net.d is
//     that node's;
//   - its own cgroup root in every cgroup v1 hierarchy, made beforehand, so
//     that the kubelet's kubepods tree, containerd and its shims are one
//     subtree that down kills and removes.

// hostMounts are the paths bind-mounted per node, in the order mounted.
// /var/run is a symlink to /run on Debian: the agent's /var/run/rhizome
// hostPath is /run/rhizome.
var hostMounts = []string{
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/etc/containerd",
	"/var/lib/containerd",
	"/run/containerd",
	"/var/lib/kubelet",
	"/var/log/pods",
	"/var/log/containers",
	"/var/lib/cni",
	"/run/rhizome",
}

// cgroupHierarchies are the cgroup v1 hierarchies a node's cgroup root is
// made in, and the cgroup2 one beside them (the kubelet creates kubepods
// there too).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out
}

func (l *Lab) kubeRoot(node string) string   { return filepath.Join(l.nodeDir(node), "root") }
func (l *Lab) mountNSDir(node string) string { return filepath.Join(l.nodeDir(node), "ns") }
func (l *Lab) mountNS(node string) string    { return filepath.Join(l.mountNSDir(node), "mnt") }

// cgroupRoot is the node's kubelet cgroupRoot; containerd and its shims run
// in its "runtime" child.
func (l *Lab) cgroupRoot(node string) string { return "/" + l.Prefix + node }

// backing returns the per-node directory mounted over a host path.
func (l *Lab) backing(node, path string) string {
	return filepath.Join(l.kubeRoot(node), strings.ReplaceAll(strings.Trim(path, "/"), "/", "_"))
}

// prepareKubeHost makes the node's directories, its mount namespace with the
// bind mounts, and its cgroup root. It must run before any container of the
// node starts: a new mount namespace copies the mounts that exist when it is
// made, and a pod's mounts must not leak into another node's namespace.
func (l *Lab) prepareKubeHost(node string) error {
	for _, p := range hostMounts {
		if err := os.MkdirAll(l.backing(node, p), 0o755); err != nil {
			return err
		}
		// The mount point must exist on the host; remember the ones we
		// create (and their missing parents) so down removes them again.
		var missing []string
		for d := p; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				break
			}
			missing = append(missing, d)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		for i := len(missing) - 1; i >= 0; i-- {
			l.State.CreatedDirs = append(l.State.CreatedDirs, missing[i])
		}
	}
	if err := l.save(); err != nil {
		return err
	}
	// unshare can bind a namespace only onto a file in a private mount.
	dir := l.mountNSDir(node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := run("mount", "--bind", dir, dir); err != nil {
		return err
	}
	if err := run("mount", "--make-private", dir); err != nil {
		return err
	}
	if err := os.WriteFile(l.mountNS(node), nil, 0o644); err != nil {
		return err
	}
	if err := run("unshare", "--mount="+l.mountNS(node), "--propagation", "private", "true"); err != nil {
		return err
	}
	for _, p := range hostMounts {
		if err := run("nsenter", "--mount="+l.mountNS(node), "mount", "--bind", l.backing(node, p), p); err != nil {
			return err
		}
	}
	return l.makeCgroups(node)
}

// makeCgroups creates the node's cgroup root and its runtime child in every
// hierarchy; cpuset children start empty and must copy their parent's CPUs
// and memory nodes before a task can join.
func (l *Lab) makeCgroups(node string) error {
	for _, h := range cgroupHierarchies() {
		for _, rel := range []string{l.cgroupRoot(node), l.cgroupRoot(node) + "/runtime"} {
			d := filepath.Join(h, rel)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("creating cgroup %s: %w", d, err)
			}
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
						return fmt.Errorf("setting %s of %s: %w", f, d, err)
					}
				}
			}
		}
	}
	return nil
}

// joinRuntimeCgroup moves a process (containerd, before it starts any shim)
// into the node's runtime cgroup in every hierarchy.
func (l *Lab) joinRuntimeCgroup(node string, pid int) error {
	for _, h := range cgroupHierarchies() {
		if filepath.Base(h) == "unified" {
			continue // no controllers there; v1 membership is what down reads
		}
		f := filepath.Join(h, l.cgroupRoot(node), "runtime", "cgroup.procs")
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("moving %d into %s: %w", pid, f, err)
		}
	}
	return nil
}

// nodeCgroupPIDs lists every process in the node's cgroup subtree: its
// containerd, shims and every container's processes.
func (l *Lab) nodeCgroupPIDs(node string) []int {
	var pids []int
	root := filepath.Join("/sys/fs/cgroup/pids", l.cgroupRoot(node))
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// teardownKubeHost kills what still runs in the node's cgroups, removes them
// (deepest first, in every hierarchy), and unmounts its mount namespace,
// which releases the bind mounts, the kubelet's volume mounts and the pods'
// network namespaces that containerd mounted inside it.
func (l *Lab) teardownKubeHost(node string) {
	for range 50 {
		pids := l.nodeCgroupPIDs(node)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range cgroupHierarchies() {
		removeCgroupTree(filepath.Join(h, l.cgroupRoot(node)))
	}
	if _, err := os.Stat(l.mountNS(node)); err == nil {
		syscall.Unmount(l.mountNS(node), syscall.MNT_DETACH)
	}
	syscall.Unmount(l.mountNSDir(node), syscall.MNT_DETACH)
}

// removeCgroupTree removes a cgroup directory and its children, deepest
// first (rmdir of a cgroup fails while it has children or tasks).
func removeCgroupTree(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		for range 20 {
			if err := syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// kernelSysctls are the machine-wide settings the kubelet changes at start
// (setupKernelTunables): saved before the first kubelet, restored by down.
var kernelSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// saveSysctls records the machine's values once per lab.
func (l *Lab) saveSysctls() error {
	if l.State.SavedSysctls != nil {
		return nil
	}
	saved := map[string]string{}
	for _, k := range kernelSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue
		}
		saved[k] = strings.TrimSpace(string(b))
	}
	l.State.SavedSysctls = saved
	return l.save()
}

// restoreSysctls writes back what saveSysctls recorded.
func restoreSysctls(saved map[string]string) error {
	var errs []error
	for k, v := range saved {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// downKubelet removes what a kubelet lab made on the machine beyond its
// processes and namespaces: each node's cgroups (and whatever still runs in
// them: shims, containers), mount namespace, the mount points it created, and
// the kernel sysctls the kubelets changed. Up's processes are already stopped.
func (l *Lab) downKubelet(st *State) error {
	entries, _ := os.ReadDir(filepath.Join(l.Dir, "nodes"))
	for _, e := range entries {
		if e.IsDir() {
			l.teardownKubeHost(e.Name())
		}
	}
	for i := len(st.CreatedDirs) - 1; i >= 0; i-- {
		os.Remove(st.CreatedDirs[i]) // only if empty: never what another program put there
	}
	return restoreSysctls(st.SavedSysctls)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MemoryMiB sums the resident memory of everything the lab runs: its
// recorded processes (control plane aside), every process in the nodes'
// cgroups (containerd, shims, containers), and the control plane's.
func (l *Lab) MemoryMiB() float64 {
	seen := map[int]bool{}
	for _, p := range l.State.Procs {
		seen[p.PID] = true
	}
	entries, _ := os.ReadDir(filepath.Join(l.Dir, "nodes"))
	for _, e := range entries {
		for _, pid := range l.nodeCgroupPIDs(e.Name()) {
			seen[pid] = true
		}
	}
	for _, pid := range controlplane.PIDs(l.ControlPlaneDir()) {
		seen[pid] = true
	}
	var kib float64
	for pid := range seen {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				var n float64
				fmt.Sscanf(strings.TrimSpace(v), "%f", &n)
				kib += n
			}
		}
	}
	return kib / 1024
}
