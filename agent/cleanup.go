package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/routes"
)

// An agent leaves its kernel state in place when it stops, on purpose: a
// restart or an upgrade must not drop a route, and an agent cannot tell a
// SIGTERM of an upgrade from one of an uninstall (nor should a mistaken
// `kubectl delete daemonset` take every pod's network down on every node:
// with the state kept, the data path runs on until the DaemonSet is back).
// Cleanup removes that state, and the CNI plugin the init container put on
// the host, when Rhizome is uninstalled for good (`rhizome-agent cleanup`,
// run by deploy/cleanup's DaemonSet or by hand; docs/install.md).

// CleanupConfig is what `rhizome-agent cleanup` removes, and where.
type CleanupConfig struct {
	// AgentSocket is the local API's socket. While an agent answers on it,
	// Cleanup waits (up to AgentTimeout) and then refuses: a running agent
	// would put everything back. A socket file nobody answers on (an agent
	// killed with SIGKILL) is removed.
	AgentSocket  string
	AgentTimeout time.Duration
	// GoBGPSocket is GoBGP's API socket (DefaultGoBGPAPIAddress): removed
	// if nobody answers on it, and its directory with it once empty.
	GoBGPSocket string
	// RouteTable, RouteProtocol and VXLANDevice name the route programmer's
	// state (routes.CleanupOptions).
	RouteTable    uint32
	RouteProtocol uint8
	VXLANDevice   string
	// CNIBinDir and CNIConfDir are where the plugin and its conflist are
	// (cni.Uninstall).
	CNIBinDir, CNIConfDir string
	// DryRun finds the state without removing it.
	DryRun bool
}

// ErrAgentRunning means an agent still answers on the node.
var ErrAgentRunning = errors.New("an agent is running on this node")

// CleanupReport is what Cleanup found: removed, unless it was a dry run.
type CleanupReport struct {
	Kernel routes.Leftovers
	// Files are the CNI plugin's files, a stale agent socket and the
	// BFD sessions a stopped agent left for the next one.
	Files []string
}

// Empty reports whether nothing of Rhizome was found.
func (r CleanupReport) Empty() bool { return r.Kernel.Empty() && len(r.Files) == 0 }

// Lines describes the report, one thing a line.
func (r CleanupReport) Lines() []string { return append(r.Kernel.Lines(), r.Files...) }

// Cleanup removes Rhizome's state from the host it runs on (this network
// namespace, these directories), once no agent runs there.
func Cleanup(ctx context.Context, cfg CleanupConfig) (CleanupReport, error) {
	var rep CleanupReport
	stale, err := waitAgentGone(ctx, cfg.AgentSocket, cfg.AgentTimeout)
	if err != nil {
		return rep, err
	}
	var errs []error
	if rep.Kernel, err = routes.Cleanup(routes.CleanupOptions{Table: cfg.RouteTable, Protocol: cfg.RouteProtocol,
		VXLANDevice: cfg.VXLANDevice, DryRun: cfg.DryRun}); err != nil {
		errs = append(errs, err)
	}
	files, err := cni.Uninstall(cfg.CNIBinDir, cfg.CNIConfDir, cfg.DryRun)
	rep.Files = files
	if err != nil {
		errs = append(errs, err)
	}
	if err := cleanupSockets(ctx, cfg, stale, &rep); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// cleanupSockets removes the agent's socket if it is stale (agentStale,
// from waitAgentGone), GoBGP's API socket if nobody answers on it, and
// GoBGP's directory once empty, adding them to rep.Files.
func cleanupSockets(ctx context.Context, cfg CleanupConfig, agentStale bool, rep *CleanupReport) error {
	var errs []error
	remove := func(path string) {
		rep.Files = append(rep.Files, path)
		if !cfg.DryRun {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if agentStale {
		remove(cfg.AgentSocket)
	}
	// The BFD sessions a stopping agent handed to its successor (design
	// 0017): no agent follows an uninstall, and one installed later must
	// not resume sessions of another life.
	if cfg.AgentSocket != "" {
		sus := bfd.SuspendedFile(filepath.Dir(cfg.AgentSocket))
		for _, p := range []string{sus, sus + ".tmp"} {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
				remove(p)
			}
		}
	}
	if cfg.GoBGPSocket != "" {
		// The agent that served it is gone (waited for above).
		gobgpStale, err := waitAgentGone(ctx, cfg.GoBGPSocket, 0)
		if err != nil {
			errs = append(errs, err)
		} else if gobgpStale {
			remove(cfg.GoBGPSocket)
		}
		// Its directory (the agent's own, mode 0700) once it is empty.
		dir := filepath.Dir(cfg.GoBGPSocket)
		left := 0
		if entries, err := os.ReadDir(dir); err == nil {
			left = len(entries)
			if cfg.DryRun && gobgpStale {
				left--
			}
			if left == 0 {
				remove(dir)
			}
		}
	}
	return errors.Join(errs...)
}

// waitAgentGone waits until nothing answers on the agent's socket, for at
// most timeout. stale reports a socket file that nobody answers on.
func waitAgentGone(ctx context.Context, socket string, timeout time.Duration) (stale bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		fi, err := os.Lstat(socket)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if fi.Mode()&fs.ModeSocket == 0 {
			return false, nil // not a socket: not the agent's, left alone
		}
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", socket)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return true, nil
		case errors.Is(err, fs.ErrNotExist):
			return false, nil // gone meanwhile
		case err != nil:
			return false, fmt.Errorf("finding out whether an agent answers on %s: %w", socket, err)
		}
		c.Close()
		if time.Now().After(deadline) {
			return false, fmt.Errorf("%w: it answers on %s; delete the DaemonSet first (a running agent puts its routes back)", ErrAgentRunning, socket)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
