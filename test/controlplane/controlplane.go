// Package controlplane runs a real kube-apiserver and etcd on 127.0.0.1 for
// Rhizome's integration tests, the lab and `make cluster-up`.
//
// The binaries are built from pinned Go modules (the tools module next to
// this package) and cached by a hash of its go.mod and go.sum; see
// EnsureBinaries. Start generates certificates and a token, starts etcd and
// the API server on free loopback ports, waits for /readyz and writes a
// kubeconfig. Processes are stopped by the PIDs this package started and
// recorded, never by name.
package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Options configure Start.
type Options struct {
	// Dir holds certificates, data, logs and the kubeconfig. Empty: a new
	// temporary directory, removed by Stop.
	Dir string
	// Log receives progress messages (builds, start-up). Nil: discarded.
	Log io.Writer
	// Detach lets the processes outlive the caller (make cluster-up); they
	// are then stopped with StopDir. Otherwise they are killed when the
	// calling process dies, even by SIGKILL.
	Detach bool
	// SkipCRDs leaves Rhizome's CRDs out; by default they are installed
	// and Start returns once they are served.
	SkipCRDs bool
	// Controllers also starts kube-controller-manager and kube-scheduler
	// (for clusters with real kubelets: DaemonSets, Deployments,
	// ServiceAccounts), and turns on what they make possible: the
	// ServiceAccount admission plugin and the Node authorizer with
	// NodeRestriction, so kubelets run with their own node credentials
	// (NodeKubeconfig).
	Controllers bool
	// APIServerArgs are further kube-apiserver flags (the lab's egress
	// selector).
	APIServerArgs []string
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Dir is the state directory.
	Dir string
	// URL is the API server's https address.
	URL string
	// Kubeconfig is the path of an admin kubeconfig (client certificate in
	// system:masters).
	Kubeconfig string
	// AdminToken is a bearer token of a system:masters user, for tools that
	// want a token rather than a certificate.
	AdminToken string
	// Binaries are the programs in use, including a kubectl of the same
	// version.
	Binaries Binaries

	pki         *pki
	nodeBins    NodeBinaries
	kapiArgs    []string
	extraArgs   []string
	ownDir      bool
	etcd, kapi  *exec.Cmd
	kcm, sched  *exec.Cmd
	controllers bool
	spawn       chan func()
	stateFile   string
	stopTimeout time.Duration
}

// state is what Detach mode records so that another process can stop it.
type state struct {
	OwnerPID     int    `json:"ownerPID"`
	EtcdPID      int    `json:"etcdPID"`
	EtcdBin      string `json:"etcdBin"`
	APIServerPID int    `json:"apiserverPID"`
	APIServerBin string `json:"apiserverBin"`
	// APIServerArgs let StartAPIServer restart it as it was.
	APIServerArgs []string `json:"apiserverArgs"`
	// The controllers, when Options.Controllers started them.
	ControllerManagerPID int    `json:"controllerManagerPID,omitempty"`
	ControllerManagerBin string `json:"controllerManagerBin,omitempty"`
	SchedulerPID         int    `json:"schedulerPID,omitempty"`
	SchedulerBin         string `json:"schedulerBin,omitempty"`
	URL                  string `json:"url"`
	Kubeconfig           string `json:"kubeconfig"`
	Detached             bool   `json:"detached"`
}

const stateFileName = "state.json"

// Start builds (or reuses) the binaries and starts a control plane.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	bins, err := EnsureBinaries(ctx, log)
	if err != nil {
		return nil, err
	}
	if !opts.Detach {
		cleanupLeftovers(log)
	}
	cp := &ControlPlane{Binaries: bins, Dir: opts.Dir, stopTimeout: 20 * time.Second, controllers: opts.Controllers, extraArgs: opts.APIServerArgs}
	if opts.Controllers {
		if cp.nodeBins, err = EnsureNodeBinaries(ctx, log); err != nil {
			return nil, err
		}
	}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", tempPrefix); err != nil {
			return nil, err
		}
		cp.ownDir = true
	} else if err := os.MkdirAll(cp.Dir, 0o700); err != nil {
		return nil, err
	}
	cp.stateFile = filepath.Join(cp.Dir, stateFileName)
	if !opts.Detach {
		cp.startSpawner()
	}
	if err := cp.start(ctx, log, opts.Detach); err != nil {
		cp.Stop()
		return nil, err
	}
	if !opts.SkipCRDs {
		fmt.Fprintln(log, "controlplane: installing Rhizome CRDs")
		if err := InstallCRDs(ctx, cp.RESTConfig()); err != nil {
			cp.Stop()
			return nil, err
		}
	}
	return cp, nil
}

const tempPrefix = "rhizome-cp-"

func (cp *ControlPlane) start(ctx context.Context, log io.Writer, detach bool) error {
	var err error
	if cp.pki, err = writePKI(cp.Dir); err != nil {
		return err
	}
	cp.AdminToken = randomToken()
	tokens := filepath.Join(cp.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(cp.AdminToken+",rhizome-admin-token,rhizome-admin-token,system:masters\n"), 0o600); err != nil {
		return err
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ { // free ports can be raced for
		if lastErr = cp.startOnce(ctx, log, tokens, detach); lastErr == nil {
			return nil
		}
		fmt.Fprintf(log, "controlplane: attempt %d failed: %v\n", attempt, lastErr)
		cp.stopProcesses()
		if ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

func (cp *ControlPlane) startOnce(ctx context.Context, log io.Writer, tokens string, detach bool) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(cp.Dir, "etcd-data")
	os.RemoveAll(dataDir)
	start := time.Now()
	cp.etcd, err = cp.launch(detach, "etcd", cp.Binaries.Etcd,
		"--name=default", "--data-dir="+dataDir,
		"--listen-client-urls="+etcdClient, "--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=default="+etcdPeer,
		"--unsafe-no-fsync=true", "--log-level=warn",
		"--quota-backend-bytes=4294967296")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, etcdClient+"/health", cp.etcd, 30*time.Second); err != nil {
		return fmt.Errorf("etcd did not become healthy: %w\n%s", err, tail(filepath.Join(cp.Dir, "etcd.log")))
	}
	fmt.Fprintf(log, "controlplane: etcd healthy on %s in %s\n", etcdClient, time.Since(start).Round(time.Millisecond))
	cp.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	cp.kapiArgs = []string{"--etcd-servers=" + etcdClient,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[2]),
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(cp.Dir, "apiserver-certs"),
		"--tls-cert-file=" + cp.pki.ServingCert, "--tls-private-key-file=" + cp.pki.ServingKey,
		"--client-ca-file=" + cp.pki.CACert,
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-signing-key-file=" + cp.pki.SAKey,
		"--service-account-key-file=" + cp.pki.SAPub,
		"--service-cluster-ip-range=10.96.0.0/12",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=0"}
	if cp.controllers {
		// kube-controller-manager creates every namespace's default
		// ServiceAccount, so pods can be admitted with theirs; kubelets
		// authenticate as system:node:<name>.
		cp.kapiArgs = append(cp.kapiArgs, "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction")
	} else {
		cp.kapiArgs = append(cp.kapiArgs, "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount")
	}
	cp.kapiArgs = append(cp.kapiArgs, cp.extraArgs...)
	cp.kapi, err = cp.launch(detach, "kube-apiserver", cp.Binaries.APIServer, cp.kapiArgs...)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, cp.adminHTTPClient(), cp.URL+"/readyz", cp.kapi, 90*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready: %w\n%s", err, tail(filepath.Join(cp.Dir, "kube-apiserver.log")))
	}
	fmt.Fprintf(log, "controlplane: kube-apiserver ready on %s in %s\n", cp.URL, time.Since(start).Round(time.Millisecond))
	if err := cp.writeKubeconfig(); err != nil {
		return err
	}
	if cp.controllers {
		if err := cp.startControllers(ctx, log, detach); err != nil {
			return err
		}
	}
	return cp.writeState(detach)
}

// launch starts one program with its output in DIR/NAME.log. Attached
// programs are started from the spawner's locked OS thread with a parent
// death signal, so they die with this process; detached ones get their own
// session.
func (cp *ControlPlane) launch(detach bool, name, bin string, args ...string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(cp.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = cp.Dir
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		done := make(chan error)
		cp.spawn <- func() { done <- cmd.Start() }
		err = <-done
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go cmd.Wait() // reap; Stop watches ProcessState through waitExit
	return cmd, nil
}

// startSpawner runs a goroutine locked to its OS thread that starts the
// child processes. Pdeathsig fires when the thread that forked a child exits,
// so the thread must live as long as the children: it ends only in Stop.
func (cp *ControlPlane) startSpawner() {
	cp.spawn = make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		for f := range cp.spawn {
			f()
		}
	}()
}

// RESTConfig returns an admin client configuration.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: cp.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.pki.caPEM,
			CertData: cp.pki.adminCertPEM,
			KeyData:  cp.pki.adminKeyPEM,
		},
		QPS:   500,
		Burst: 1000,
	}
}

// TokenRESTConfig returns a configuration that authenticates only with the
// given bearer token, e.g. a ServiceAccount's, for RBAC tests.
func (cp *ControlPlane) TokenRESTConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.pki.caPEM},
		QPS:             500,
		Burst:           1000,
	}
}

func (cp *ControlPlane) adminHTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caPEM)
	cert, _ := tls.X509KeyPair(cp.pki.adminCertPEM, cp.pki.adminKeyPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
}

// Kubectl runs the control plane's own kubectl against it and returns its
// combined output.
func (cp *ControlPlane) Kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, cp.Binaries.Kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Stop stops the API server and then etcd (SIGTERM, SIGKILL after a grace
// period) and removes the state directory if Start created it.
func (cp *ControlPlane) Stop() {
	cp.stopProcesses()
	if cp.spawn != nil {
		close(cp.spawn)
		cp.spawn = nil
	}
	if cp.ownDir {
		os.RemoveAll(cp.Dir)
	}
}

func (cp *ControlPlane) stopProcesses() {
	for _, c := range []**exec.Cmd{&cp.sched, &cp.kcm} {
		if *c != nil {
			stopPID((*c).Process.Pid, cp.stopTimeout)
			*c = nil
		}
	}
	if cp.kapi != nil {
		stopPID(cp.kapi.Process.Pid, cp.stopTimeout)
		cp.kapi = nil
	}
	if cp.etcd != nil {
		stopPID(cp.etcd.Process.Pid, cp.stopTimeout)
		cp.etcd = nil
	}
	os.Remove(cp.stateFile)
}

// StopDir stops a control plane started with Detach in dir, by the PIDs in its
// state file, after checking that each PID still runs the recorded binary.
// It removes dir. A missing state file is not an error.
func StopDir(dir string) error {
	st, err := readState(filepath.Join(dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(dir)
	}
	if err != nil {
		return err
	}
	stopOwned(st)
	return os.RemoveAll(dir)
}

func stopOwned(st *state) {
	if st.SchedulerPID != 0 && pidRuns(st.SchedulerPID, st.SchedulerBin) {
		stopPID(st.SchedulerPID, 20*time.Second)
	}
	if st.ControllerManagerPID != 0 && pidRuns(st.ControllerManagerPID, st.ControllerManagerBin) {
		stopPID(st.ControllerManagerPID, 20*time.Second)
	}
	if pidRuns(st.APIServerPID, st.APIServerBin) {
		stopPID(st.APIServerPID, 20*time.Second)
	}
	if pidRuns(st.EtcdPID, st.EtcdBin) {
		stopPID(st.EtcdPID, 20*time.Second)
	}
}

// PIDs returns the running processes of the control plane recorded in dir
// (for memory accounting).
func PIDs(dir string) []int {
	st, err := readState(filepath.Join(dir, stateFileName))
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range []struct {
		pid int
		bin string
	}{{st.EtcdPID, st.EtcdBin}, {st.APIServerPID, st.APIServerBin}, {st.ControllerManagerPID, st.ControllerManagerBin}, {st.SchedulerPID, st.SchedulerBin}} {
		if p.pid != 0 && pidRuns(p.pid, p.bin) {
			out = append(out, p.pid)
		}
	}
	return out
}

// Running reports whether the control plane recorded in dir is up, and its
// kubeconfig.
func Running(dir string) (kubeconfig string, ok bool) {
	st, err := readState(filepath.Join(dir, stateFileName))
	if err != nil {
		return "", false
	}
	return st.Kubeconfig, pidRuns(st.APIServerPID, st.APIServerBin) && pidRuns(st.EtcdPID, st.EtcdBin)
}

// cleanupLeftovers stops control planes of test processes that died without
// stopping them (Pdeathsig normally kills the children; this also removes
// their directories).
func cleanupLeftovers(log io.Writer) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		st, err := readState(filepath.Join(d, stateFileName))
		if err != nil {
			if fi, statErr := os.Stat(d); statErr == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(d) // never got as far as a state file
			}
			continue
		}
		if st.Detached || processAlive(st.OwnerPID) {
			continue
		}
		fmt.Fprintf(log, "controlplane: removing leftovers of a crashed run in %s\n", d)
		stopOwned(st)
		os.RemoveAll(d)
	}
}

func (cp *ControlPlane) writeState(detach bool) error {
	st := state{
		OwnerPID: os.Getpid(), EtcdPID: cp.etcd.Process.Pid, EtcdBin: cp.Binaries.Etcd,
		APIServerPID: cp.kapi.Process.Pid, APIServerBin: cp.Binaries.APIServer, APIServerArgs: cp.kapiArgs,
		URL: cp.URL, Kubeconfig: cp.Kubeconfig, Detached: detach,
	}
	if cp.kcm != nil {
		st.ControllerManagerPID, st.ControllerManagerBin = cp.kcm.Process.Pid, cp.nodeBins.ControllerManager
	}
	if cp.sched != nil {
		st.SchedulerPID, st.SchedulerBin = cp.sched.Process.Pid, cp.nodeBins.Scheduler
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return os.WriteFile(cp.stateFile, b, 0o600)
}

func readState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &st, nil
}

func (cp *ControlPlane) writeKubeconfig() error {
	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	return os.WriteFile(cp.Kubeconfig, KubeconfigBytes(cp.URL, cp.pki.caPEM, cp.pki.adminCertPEM, cp.pki.adminKeyPEM, ""), 0o600)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(ctx context.Context, c *http.Client, url string, proc *exec.Cmd, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !processAlive(proc.Process.Pid) {
			return fmt.Errorf("process %d exited", proc.Process.Pid)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s: %v", timeout, last)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
