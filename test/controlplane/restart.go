package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// StopAPIServer stops the API server of the detached control plane in dir
// (etcd and the files stay), for outage scenarios. It is restarted with
// StartAPIServer.
func StopAPIServer(dir string) error {
	st, err := readState(filepath.Join(dir, stateFileName))
	if err != nil {
		return err
	}
	if !pidRuns(st.APIServerPID, st.APIServerBin) {
		return fmt.Errorf("the API server (pid %d) is not running", st.APIServerPID)
	}
	stopPID(st.APIServerPID, 20*time.Second)
	return nil
}

// StartAPIServer starts the API server of the control plane in dir again,
// with the arguments it first ran with (same port, certificates, etcd), and
// waits until it is ready.
func StartAPIServer(ctx context.Context, dir string) error {
	path := filepath.Join(dir, stateFileName)
	st, err := readState(path)
	if err != nil {
		return err
	}
	if pidRuns(st.APIServerPID, st.APIServerBin) {
		return fmt.Errorf("the API server (pid %d) is already running", st.APIServerPID)
	}
	if len(st.APIServerArgs) == 0 {
		return fmt.Errorf("%s records no API server arguments", path)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(st.APIServerBin, st.APIServerArgs...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver: %w", err)
	}
	go cmd.Wait()
	st.APIServerPID = cmd.Process.Pid
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	client, err := adminClientFromDir(dir)
	if err != nil {
		return err
	}
	return waitHTTP(ctx, client, st.URL+"/readyz", cmd, 90*time.Second)
}

func adminClientFromDir(dir string) (*http.Client, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}
