package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

// containerdConf is containerd 2.x's configuration (version 3) for one lab
// node. The paths are the standard ones: the node's mount namespace maps them
// to its own directories.
//
//   - restrict_oom_score_adj: this sandbox lacks CAP_SYS_RESOURCE, and runc
//     fails to start containers that would lower their OOM score;
//   - netns_mounts_under_state_dir: pods' network namespaces are mounted under
//     /run/containerd (the node's) rather than the machine's /run/netns;
//   - the sandbox (pause) image is pinned and built here: no registry is
//     reachable, so nothing is ever pulled;
//   - NRI is off (nothing uses it), and so is the plugin that would make
//     /opt/containerd on the machine.
var containerdConf = template.Must(template.New("containerd").Parse(`# rhizome-lab node {{.Node}}; generated, do not edit.
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{{.Socket}}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{{.PauseImage}}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "{{.Runc}}"
      SystemdCgroup = false
`))

// kubeletConf is the KubeletConfiguration of one lab node.
//
//   - failCgroupV1: false — this machine mounts cgroup v1, which kubelets
//     from 1.35 on refuse unless told otherwise;
//   - cgroupRoot: the node's own subtree (made beforehand, see kubehost.go);
//   - protectKernelDefaults: false — the kubelet then sets its kernel
//     sysctls (machine-wide; down restores them) instead of failing;
//   - image GC off: every image is imported, none can be pulled back;
//   - volumePluginDir inside the node's /var/lib/kubelet, not the machine's
//     /usr/libexec.
var kubeletConf = template.Must(template.New("kubelet").Parse(`# rhizome-lab node {{.Node}}; generated, do not edit.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {{.CgroupRoot}}
containerRuntimeEndpoint: unix://{{.Socket}}
address: {{.NodeIP}}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: {{.ClientCA}}}
authorization:
  mode: AlwaysAllow
failSwapOn: false
protectKernelDefaults: false
resolvConf: /etc/resolv.conf
maxPods: 250
podLogsDir: /var/log/pods
volumePluginDir: /var/lib/kubelet/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
shutdownGracePeriod: 0s
serializeImagePulls: false
nodeStatusUpdateFrequency: 4s
`))

// Paths inside a node's mount namespace.
const (
	containerdSocket = "/run/containerd/containerd.sock"
	runcPath         = "/usr/sbin/runc"
	// stockCNIDir is where Debian's containernetworking-plugins puts the
	// reference plugins; a node's /opt/cni/bin gets loopback (containerd
	// brings up pods' lo with it) and the portmap and bandwidth plugins
	// Rhizome's conflist chains, as a kubeadm node has them.
	stockCNIDir = "/usr/lib/cni"
)

var stockCNIPlugins = []string{"loopback", "portmap", "bandwidth"}

func (l *Lab) kubeletDir(node string) string { return filepath.Join(l.nodeDir(node), "kubelet") }

// nsenterArgs runs a program in the node's network and mount namespaces.
func (l *Lab) nsenterArgs(node string, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + ns(l.nodeNS(node)).Path(), "--mount=" + l.mountNS(node), "--"}, argv...)
}

// inNodeMounts runs a short command in the node's mount namespace only.
func (l *Lab) inNodeMounts(ctx context.Context, node string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--mount=" + l.mountNS(node), "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("on %s: %s: %w: %s", node, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// startKubeNode makes a node's host (mount namespace, directories, cgroups),
// starts its containerd, imports the lab's images and starts its kubelet,
// which registers the Node.
func (l *Lab) startKubeNode(ctx context.Context, n NodePlan, bins controlplane.NodeBinaries) error {
	if err := l.saveSysctls(); err != nil {
		return err
	}
	if err := l.prepareKubeHost(n.Name); err != nil {
		return fmt.Errorf("preparing %s: %w", n.Name, err)
	}
	for _, p := range stockCNIPlugins {
		if err := copyFile(filepath.Join(stockCNIDir, p), filepath.Join(l.backing(n.Name, "/opt/cni/bin"), p), 0o755); err != nil {
			return fmt.Errorf("%w (install containernetworking-plugins: make deps)", err)
		}
	}
	var conf bytes.Buffer
	if err := containerdConf.Execute(&conf, map[string]string{
		"Node": n.Name, "Socket": containerdSocket, "PauseImage": l.State.Images.Pause, "Runc": runcPath,
	}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.backing(n.Name, "/etc/containerd"), "config.toml"), conf.Bytes(), 0o644); err != nil {
		return err
	}
	logf := filepath.Join(l.nodeDir(n.Name), "containerd.log")
	path := bins.ContainerdDir + ":" + os.Getenv("PATH")
	argv := l.nsenterArgs(n.Name, "env", "PATH="+path, bins.Containerd, "--config", "/etc/containerd/config.toml", "--log-level", "warn")
	if err := l.startProc("containerd", n.Name, "", logf, bins.Containerd, argv...); err != nil {
		return err
	}
	if err := l.joinRuntimeCgroup(n.Name, l.procPID("containerd", n.Name)); err != nil {
		return err
	}
	if err := l.waitContainerd(ctx, n.Name, bins.Ctr); err != nil {
		return err
	}
	for _, img := range l.State.Images.Tarballs {
		if _, err := l.inNodeMounts(ctx, n.Name, bins.Ctr, "--address", containerdSocket, "-n", "k8s.io",
			"images", "import", "--no-unpack=false", "--local", img); err != nil {
			return fmt.Errorf("importing %s: %w", img, err)
		}
	}
	return l.startKubelet(ctx, n, bins)
}

func (l *Lab) startKubelet(ctx context.Context, n NodePlan, bins controlplane.NodeBinaries) error {
	dir := l.kubeletDir(n.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kc, err := controlplane.NodeKubeconfig(l.ControlPlaneDir(), fmt.Sprintf("https://127.0.0.1:%d", l.State.APIPort), n.Name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kc, 0o600); err != nil {
		return err
	}
	var conf bytes.Buffer
	if err := kubeletConf.Execute(&conf, map[string]string{
		"Node": n.Name, "CgroupRoot": l.cgroupRoot(n.Name), "Socket": containerdSocket,
		"NodeIP": n.Addr.Addr().String(), "ClientCA": filepath.Join(l.ControlPlaneDir(), "ca.crt"),
	}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), conf.Bytes(), 0o644); err != nil {
		return err
	}
	labels := []string{RackLabel + "=" + rackLabelValue(n.Rack)}
	if n.RouteReflector {
		labels = append(labels, RRLabel+"=true")
	}
	argv := l.nsenterArgs(n.Name, bins.Kubelet,
		"--config="+filepath.Join(dir, "config.yaml"),
		"--kubeconfig="+filepath.Join(dir, "kubeconfig"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.Addr.Addr().String(),
		"--node-labels="+strings.Join(labels, ","),
		"--v=1")
	return l.startProc("kubelet", n.Name, "", filepath.Join(l.nodeDir(n.Name), "kubelet.log"), bins.Kubelet, argv...)
}

// waitContainerd waits until the node's containerd answers on its socket.
func (l *Lab) waitContainerd(ctx context.Context, node, ctr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := l.inNodeMounts(ctx, node, ctr, "--address", containerdSocket, "version")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !l.hasProc("containerd", node) {
			return fmt.Errorf("containerd of %s not answering: %w\n%s", node, err, tailFile(filepath.Join(l.nodeDir(node), "containerd.log"), 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// procPID returns the PID of a recorded running process, or 0.
func (l *Lab) procPID(role, node string) int {
	for _, p := range l.State.Procs {
		if p.Role == role && p.Node == node && p.alive() {
			return p.PID
		}
	}
	return 0
}

// rackLabelValue is a kubelet node's rack label: a letter, as in the tor
// overlay's example BGPPeer (rack a is the lab's rack 1).
func rackLabelValue(rack int) string { return string(rune('a' + rack - 1)) }

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}
