package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/test/netns"
)

// The API server listens on 127.0.0.1 of the host namespace, which the
// agents in node namespaces cannot reach. An apiproxy per node listens on the
// same 127.0.0.1 port inside the node's namespace and forwards each
// connection to the host's loopback, so the agents use the lab's kubeconfig
// unchanged and no traffic leaves the loopback interfaces. The listening
// socket is created on a thread switched into the node's namespace; sockets
// keep their namespace, so the proxy itself runs in the host namespace.

// ServeAPIProxy listens on 127.0.0.1:port (and on each of also) inside the
// namespace and forwards to 127.0.0.1:port of the calling process's
// namespace until ctx ends.
func ServeAPIProxy(ctx context.Context, nsName string, port int, also ...string) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	errc := make(chan error, 1+len(also))
	for _, listen := range append([]string{addr}, also...) {
		var ln net.Listener
		err := (&netns.NS{Name: nsName}).Do(func() error {
			var err error
			ln, err = net.Listen("tcp", listen)
			return err
		})
		if err != nil {
			return fmt.Errorf("listening on %s in %s: %w", listen, nsName, err)
		}
		go func() {
			<-ctx.Done()
			ln.Close()
		}()
		go func() { errc <- serveProxy(ctx, ln, addr) }()
	}
	return <-errc
}

func serveProxy(ctx context.Context, ln net.Listener, addr string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go forward(c, addr)
	}
}

func forward(in net.Conn, target string) {
	defer in.Close()
	out, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	go pipe(out, in)
	go pipe(in, out)
	wg.Wait()
}

func newAPIProxyCommand() *cobra.Command {
	var nsName string
	var port int
	var also []string
	cmd := &cobra.Command{
		Use:    "apiproxy",
		Short:  "Forward 127.0.0.1:PORT inside a node namespace to the host's API server (started by up)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ServeAPIProxy(cmd.Context(), nsName, port, also...)
		},
	}
	cmd.Flags().StringVar(&nsName, "netns", "", "namespace to listen in")
	cmd.Flags().IntVar(&port, "port", 0, "API server port on 127.0.0.1")
	cmd.Flags().StringSliceVar(&also, "also-listen", nil, "further ADDR:PORT to listen on inside the namespace (the kubernetes Service)")
	return cmd
}
