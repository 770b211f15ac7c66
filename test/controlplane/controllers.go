package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// startControllers starts kube-controller-manager and kube-scheduler with the
// admin kubeconfig and waits until both answer /healthz. Without them no
// DaemonSet or Deployment gets a pod, no pod gets a node and no namespace gets
// its default ServiceAccount (which the ServiceAccount admission plugin
// requires of every pod).
func (cp *ControlPlane) startControllers(ctx context.Context, log io.Writer, detach bool) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	start := time.Now()
	cp.kcm, err = cp.launch(detach, "kube-controller-manager", cp.nodeBins.ControllerManager,
		"--kubeconfig="+cp.Kubeconfig,
		"--authentication-kubeconfig="+cp.Kubeconfig,
		"--authorization-kubeconfig="+cp.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[0]),
		"--cert-dir="+filepath.Join(cp.Dir, "controller-manager-certs"),
		// Token and root CA for pods' projected ServiceAccount volumes.
		"--service-account-private-key-file="+cp.pki.SAKey,
		"--root-ca-file="+cp.pki.CACert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		// Rhizome allocates pod addresses; Node.spec.podCIDR stays empty.
		"--allocate-node-cidrs=false",
		"--profiling=false",
		"--v=0")
	if err != nil {
		return err
	}
	cp.sched, err = cp.launch(detach, "kube-scheduler", cp.nodeBins.Scheduler,
		"--kubeconfig="+cp.Kubeconfig,
		"--authentication-kubeconfig="+cp.Kubeconfig,
		"--authorization-kubeconfig="+cp.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[1]),
		"--cert-dir="+filepath.Join(cp.Dir, "scheduler-certs"),
		"--leader-elect=false",
		"--profiling=false",
		"--v=0")
	if err != nil {
		return err
	}
	// Both serve /healthz over TLS with a self-signed certificate.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for i, c := range []struct {
		name string
		proc *exec.Cmd
	}{{"kube-controller-manager", cp.kcm}, {"kube-scheduler", cp.sched}} {
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[i])
		if err := waitHTTP(ctx, insecure, url, c.proc, 60*time.Second); err != nil {
			return fmt.Errorf("%s did not become healthy: %w\n%s", c.name, err, tail(filepath.Join(cp.Dir, c.name+".log")))
		}
	}
	fmt.Fprintf(log, "controlplane: kube-controller-manager and kube-scheduler healthy in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
