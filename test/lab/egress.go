package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// The API server runs in the host's network namespace, where the nodes'
// addresses are not routed, yet it must reach them: `kubectl logs`, exec
// and port-forward go to kubelets, and the proxy subresources (rhizomectl
// --node reaches agents through pods/proxy) to pods and nodes. Clusters
// whose control plane cannot reach nodes solve this with konnectivity: the
// API server's egress selector sends its "cluster" connections through an
// HTTP CONNECT proxy. The lab does the same: the API server's egress
// selector points at a unix socket where rhizome-lab egress serves CONNECT,
// dialing each target from inside the namespace of the lab node that has
// that address. Only the lab's own node addresses are dialed; anything
// else is refused.

func (l *Lab) egressSocket() string { return filepath.Join(l.Dir, "egress.sock") }

// egressConfig writes the API server's EgressSelectorConfiguration and
// returns the flag that loads it.
func (l *Lab) egressConfig() ([]string, error) {
	path := filepath.Join(l.Dir, "egress-selector.yaml")
	cfg := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, l.egressSocket())
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return []string{"--egress-selector-config-file=" + path}, nil
}

// startEgress starts the CONNECT proxy (a verb of rhizome-lab itself).
func (l *Lab) startEgress() error {
	self, err := l.selfBinary()
	if err != nil {
		return err
	}
	return l.startProc("egress", "", "", filepath.Join(l.Dir, "egress.log"), self, "egress", "--dir", l.Dir, "--socket", l.egressSocket())
}

// selfBinary is rhizome-lab: under `go test` the running executable is the
// test binary, so the one in BinDir comes first.
func (l *Lab) selfBinary() (string, error) {
	self := filepath.Join(l.BinDir, "rhizome-lab")
	if _, err := os.Stat(self); err == nil {
		return self, nil
	}
	return os.Executable()
}

// ServeEgress serves HTTP CONNECT on a unix socket until ctx ends, dialing
// each target inside the namespace of the lab node (of the lab in dir)
// that holds the target's address.
func ServeEgress(ctx context.Context, dir, socket string) error {
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConnect(c, dir)
		}()
	}
}

func serveConnect(c net.Conn, dir string) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	reply := func(code int, msg string) {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", code, msg)
	}
	if req.Method != http.MethodConnect {
		reply(http.StatusMethodNotAllowed, "only CONNECT")
		return
	}
	nsName, err := nodeNamespaceOf(dir, req.Host)
	if err != nil {
		reply(http.StatusForbidden, err.Error())
		return
	}
	var out net.Conn
	err = ns(nsName).Do(func() error {
		var err error
		out, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", req.Host)
		return err
	})
	if err != nil {
		reply(http.StatusBadGateway, err.Error())
		return
	}
	reply(http.StatusOK, "Connection established")
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		out.Write(b)
	}
	forwardConns(c, out)
}

// nodeNamespaceOf maps host:port to the namespace of the lab node with
// that address.
func nodeNamespaceOf(dir, hostport string) (string, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", err
	}
	l, err := Open(dir, "", nil)
	if err != nil {
		return "", err
	}
	for _, n := range l.Plan.Nodes {
		if n.Addr.Addr() == a {
			return l.nodeNS(n.Name), nil
		}
	}
	return "", fmt.Errorf("%s is no lab node's address", a)
}

// forwardConns copies both ways until both sides are done.
func forwardConns(a, b net.Conn) {
	defer b.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
}

func newEgressCommand() *cobra.Command {
	var dir, socket string
	cmd := &cobra.Command{
		Use:    "egress",
		Short:  "Serve the API server's egress (HTTP CONNECT on a unix socket) into the lab's node namespaces (started by up)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ServeEgress(cmd.Context(), dir, socket)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", Dir(), "the lab's state directory")
	cmd.Flags().StringVar(&socket, "socket", "", "unix socket to serve")
	return cmd
}
