package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rhizome-net/rhizome/deploy"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// Lab is one lab on this machine: its state directory, namespace prefix,
// plan and the binaries it runs.
type Lab struct {
	Dir    string
	Prefix string
	BinDir string
	Out    io.Writer
	Plan   *Plan
	State  *State
	// OnAgentsStarted, if set, is called by Up right after the agents'
	// processes started (before waiting for them), for convergence
	// measurements.
	OnAgentsStarted func()

	start   time.Time
	lastDel time.Duration
}

// New returns a lab handle for dir (the state directory) with binaries from
// binDir (rhizome-agent, rhizome-cni, rhizomectl).
func New(dir, binDir, prefix string, out io.Writer) *Lab {
	if out == nil {
		out = io.Discard
	}
	return &Lab{Dir: dir, BinDir: binDir, Prefix: prefix, Out: out}
}

// Open loads a running lab's state.
func Open(dir, binDir string, out io.Writer) (*Lab, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	l := New(dir, binDir, st.Prefix, out)
	l.State = st
	if l.Plan, err = NewPlan(st.Options); err != nil {
		return nil, err
	}
	l.Plan.apply(st.Joined, st.Left)
	return l, nil
}

func (l *Lab) step(format string, args ...any) {
	fmt.Fprintf(l.Out, "[%6.1fs] %s\n", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}

// Up builds the whole lab. It first removes the leftovers of an earlier or
// crashed run, so it can be repeated.
func (l *Lab) Up(ctx context.Context, o Options) error {
	l.start = time.Now()
	plan, err := NewPlan(o)
	if err != nil {
		return err
	}
	if err := l.Down(); err != nil {
		return fmt.Errorf("cleaning up an earlier lab: %w", err)
	}
	l.Plan = plan
	l.State = &State{Options: o, Prefix: l.Prefix, Started: time.Now()}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	for _, b := range []string{"rhizome-agent", "rhizome-cni"} {
		if _, err := os.Stat(filepath.Join(l.BinDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build): %w", b, l.BinDir, err)
		}
	}

	l.step("control plane: starting kube-apiserver and etcd (binaries from the cache), its egress into the nodes")
	if o.Kubelet {
		l.step("control plane: with kube-controller-manager and kube-scheduler (a first build takes minutes)")
	}
	if err := l.startEgress(); err != nil {
		return err
	}
	egress, err := l.egressConfig()
	if err != nil {
		return err
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: filepath.Join(l.Dir, "controlplane"), Log: io.Discard, Detach: true,
		Controllers: o.Kubelet, SkipCRDs: o.Kubelet, APIServerArgs: egress})
	if err != nil {
		return err
	}
	u, _ := url.Parse(cp.URL)
	l.State.APIPort, _ = strconv.Atoi(u.Port())
	l.State.Kubeconfig = cp.Kubeconfig
	if err := l.save(); err != nil {
		return err
	}
	if o.Kubelet {
		l.step("control plane: ready at %s (no CRDs: the install brings them)", cp.URL)
	} else {
		l.step("control plane: ready at %s, CRDs installed", cp.URL)
	}

	l.step("network: %d racks, %d nodes (spine, ToR and node namespaces, prefix %q)", len(plan.Racks), len(plan.Nodes), l.Prefix)
	if err := l.buildNetwork(ctx); err != nil {
		return err
	}
	if o.ToR != "none" {
		l.step("ToRs: starting %s in %d ToR namespaces", o.ToR, len(plan.Racks))
		if err := l.startToRs(); err != nil {
			return err
		}
	}
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	if o.Kubelet {
		if err := l.upKubelet(ctx, cp, c); err != nil {
			return err
		}
		l.step("up: %d kubelet nodes in %d racks, ToR %s, deploy/overlays/%s, %d pods", len(plan.Nodes), len(plan.Racks), o.ToR, overlayFor(o), len(l.State.Pods))
		fmt.Fprintf(l.Out, "\nexport KUBECONFIG=%s\n", l.State.Kubeconfig)
		return nil
	}
	l.step("cluster: IPPool %s (%s %s), BGPConfiguration (%s), BGPPeers", PodPool, o.Encap, plan.EncapMode(), o.Mode)
	if err := l.applyClusterConfig(ctx, c); err != nil {
		return err
	}
	l.step("rbac: the agents run as ServiceAccount %s/%s with deploy/base/rbac.yaml", deploy.AgentNamespace, deploy.AgentServiceAccount)
	if err := l.agentIdentity(ctx, cp, c); err != nil {
		return err
	}
	l.step("nodes: registering %d Node objects", len(plan.Nodes))
	for _, n := range plan.Nodes {
		if err := l.registerNode(ctx, c, n); err != nil {
			return err
		}
	}
	l.step("agents: starting one rhizome-agent per node")
	var names []string
	for _, n := range plan.Nodes {
		if err := l.startAgent(n.Name); err != nil {
			return err
		}
		names = append(names, n.Name)
	}
	if l.OnAgentsStarted != nil {
		l.OnAgentsStarted()
	}
	if err := l.waitAgentsReady(ctx, names, l.readyTimeout()); err != nil {
		return err
	}
	l.step("agents: all %d ready", len(names))
	if o.Pods > 0 {
		if err := l.prepareCNI(); err != nil {
			return err
		}
		l.step("pods: creating %d per node through the CNI plugin", o.Pods)
		for _, n := range plan.Nodes {
			for i := 1; i <= o.Pods; i++ {
				if _, err := l.AddPod(ctx, c, n.Name, i); err != nil {
					return err
				}
			}
		}
	}
	l.step("up: %d nodes in %d racks, ToR %s, %s mode, encapsulation %s, %d pods", len(plan.Nodes), len(plan.Racks), o.ToR, o.Mode, o.Encap, len(l.State.Pods))
	fmt.Fprintf(l.Out, "\nexport KUBECONFIG=%s\n", l.State.Kubeconfig)
	return nil
}

// readyTimeout grows with the lab: a hundred agents starting on two cores
// take a while.
func (l *Lab) readyTimeout() time.Duration {
	return 2*time.Minute + time.Duration(len(l.Plan.Nodes))*3*time.Second
}

// Down stops everything the lab started (by recorded PID), removes its
// namespaces and its state directory. It works on partial and crashed labs.
func (l *Lab) Down() error {
	if l.Dir == "" || l.Dir == "/" || len(l.Prefix) < 3 {
		return fmt.Errorf("refusing to clean up: state directory %q or namespace prefix %q too broad", l.Dir, l.Prefix)
	}
	var errs []error
	if st, err := loadState(l.Dir); err == nil {
		if l.State == nil {
			l.State = st
		}
		for i := len(st.Procs) - 1; i >= 0; i-- {
			st.Procs[i].stop(5 * time.Second)
		}
		if st.Prefix != "" {
			l.Prefix = st.Prefix
		}
		if st.Options.Kubelet {
			errs = append(errs, l.downKubelet(st))
		}
	}
	removeNamespaces(l.Prefix)
	if err := controlplane.StopDir(filepath.Join(l.Dir, "controlplane")); err != nil {
		return err
	}
	errs = append(errs, os.RemoveAll(l.Dir))
	return errors.Join(errs...)
}
