package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// Matrix is the result of pinging every pod address from every pod.
type Matrix struct {
	Pods []PodRecord
	// OK[i][j] reports whether pod i reached pod j's first address.
	OK [][]bool
}

// Failures lists the pairs that did not reach each other.
func (m *Matrix) Failures() []string {
	var out []string
	for i, src := range m.Pods {
		for j, dst := range m.Pods {
			if !m.OK[i][j] {
				out = append(out, fmt.Sprintf("%s -> %s (%s)", src.Name, dst.Name, dst.Addresses[0]))
			}
		}
	}
	return out
}

// PingMatrix pings every pod's first address from every pod (one ping,
// two-second timeout), sources in parallel. Traffic stays inside the lab's
// namespaces.
func PingMatrix(ctx context.Context, pods []PodRecord) *Matrix {
	m := &Matrix{Pods: pods, OK: make([][]bool, len(pods))}
	var wg sync.WaitGroup
	for i := range pods {
		m.OK[i] = make([]bool, len(pods))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j, dst := range pods {
				if len(dst.Addresses) == 0 {
					continue
				}
				argv := InNetNS(pods[i].NetNS, "ping", "-c1", "-W2", "-q", dst.Addresses[0])
				err := exec.CommandContext(ctx, argv[0], argv[1:]...).Run()
				m.OK[i][j] = err == nil
			}
		}(i)
	}
	wg.Wait()
	return m
}

// Print renders the matrix as a table: rows are sources, columns
// destinations.
func (m *Matrix) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprint(tw, "FROM \\ TO")
	for _, p := range m.Pods {
		fmt.Fprintf(tw, "\t%s", p.Name)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "")
	for _, p := range m.Pods {
		fmt.Fprintf(tw, "\t%s", p.Addresses[0])
	}
	fmt.Fprintln(tw)
	for i, p := range m.Pods {
		fmt.Fprint(tw, p.Name)
		for j := range m.Pods {
			mark := "ok"
			if !m.OK[i][j] {
				mark = "FAIL"
			}
			fmt.Fprintf(tw, "\t%s", mark)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// InNetNS returns the command line that runs argv in the network namespace
// at path: a pod of a kubelet lab has /proc/PID/ns/net (entered with
// nsenter), any other namespace is one of `ip netns`.
func InNetNS(path string, argv ...string) []string {
	if strings.HasPrefix(path, "/proc/") {
		return append([]string{"nsenter", "--net=" + path, "--"}, argv...)
	}
	return append([]string{"ip", "netns", "exec", nsFromPath(path)}, argv...)
}

func nsFromPath(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

func newMatrixCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "matrix",
		Short: "Ping every pod from every pod and print the table; fails if any pair fails",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := loadState(Dir())
			if err != nil {
				return err
			}
			if st.Options.Kubelet {
				l, err := Open(Dir(), binDir(), os.Stdout)
				if err != nil {
					return err
				}
				if err := l.SyncPods(cmd.Context()); err != nil {
					return err
				}
				st = l.State
			}
			m := PingMatrix(cmd.Context(), st.Pods)
			m.Print(cmd.OutOrStdout())
			if f := m.Failures(); len(f) > 0 {
				return fmt.Errorf("%d of %d pairs failed", len(f), len(st.Pods)*len(st.Pods))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "all %d pairs reached each other\n", len(st.Pods)*len(st.Pods))
			return nil
		},
	}
}
