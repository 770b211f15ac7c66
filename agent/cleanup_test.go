package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/bfd"
)

// TestCleanupRefusesWhileAnAgentAnswers: with an agent listening on the
// socket, Cleanup waits for it to go, then refuses and touches nothing
// (the CNI files stay); the agent leaving during the wait lets it go on.
func TestCleanupRefusesWhileAnAgentAnswers(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.(*net.UnixListener).SetUnlinkOnClose(false) // as an agent killed with SIGKILL leaves it
	conf := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	conflist := filepath.Join(conf, "10-rhizome.conflist")
	if err := os.WriteFile(conflist, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := CleanupConfig{AgentSocket: sock, AgentTimeout: 700 * time.Millisecond, CNIBinDir: dir, CNIConfDir: conf,
		RouteTable: 254, RouteProtocol: 114, VXLANDevice: "vxlan.rhizome"}
	start := time.Now()
	_, err = Cleanup(context.Background(), cfg)
	if !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("Cleanup with an agent answering: %v, want ErrAgentRunning", err)
	}
	if waited := time.Since(start); waited < 700*time.Millisecond {
		t.Errorf("refused after %s, before the timeout", waited)
	}
	if _, err := os.Stat(conflist); err != nil {
		t.Errorf("a refused cleanup removed the conflist: %v", err)
	}

	// A socket file that is not a socket is not the agent's: no wait, kept.
	notSock := filepath.Join(dir, "plain")
	if err := os.WriteFile(notSock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if stale, err := waitAgentGone(context.Background(), notSock, time.Minute); stale || err != nil {
		t.Errorf("a plain file: stale %v, %v", stale, err)
	}
	// The agent stops (its listener closed, the socket file left behind,
	// as after SIGKILL): the file is stale.
	go func() { time.Sleep(300 * time.Millisecond); l.Close() }()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatal(err)
	}
	stale, err := waitAgentGone(context.Background(), sock, 5*time.Second)
	if err != nil || !stale {
		t.Fatalf("after the agent left: stale %v, %v; want a stale socket", stale, err)
	}
}

// TestCleanupRemovesStaleSockets: the agent's socket and GoBGP's, left by
// an agent killed with SIGKILL, go, as do the BFD sessions a stopped agent
// handed over, and GoBGP's directory once
// empty; a dry run reports them and removes nothing; a directory holding
// something else is kept.
func TestCleanupRemovesStaleSockets(t *testing.T) {
	dir := t.TempDir()
	stale := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	agentSock, gobgpSock := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "gobgp", "gobgp.sock")
	stale(agentSock)
	stale(gobgpSock)
	suspended := bfd.SuspendedFile(dir) // a stopped agent's BFD hand-over
	if err := os.WriteFile(suspended, []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := func(dryRun bool) []string {
		t.Helper()
		stale, err := waitAgentGone(context.Background(), agentSock, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep CleanupReport
		errs := cleanupSockets(context.Background(), CleanupConfig{AgentSocket: agentSock, GoBGPSocket: gobgpSock, DryRun: dryRun}, stale, &rep)
		if errs != nil {
			t.Fatal(errs)
		}
		return rep.Files
	}
	want := []string{agentSock, suspended, gobgpSock, filepath.Dir(gobgpSock)}
	if got := files(true); !slices.Equal(got, want) {
		t.Fatalf("dry run found %v, want %v", got, want)
	}
	if _, err := os.Lstat(gobgpSock); err != nil {
		t.Fatalf("a dry run removed GoBGP's socket: %v", err)
	}
	if got := files(false); !slices.Equal(got, want) {
		t.Fatalf("removed %v, want %v", got, want)
	}
	for _, p := range want {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	if got := files(false); len(got) != 0 {
		t.Errorf("a second cleanup found %v", got)
	}
	// Something else in GoBGP's directory: the directory stays.
	stale(gobgpSock)
	if err := os.WriteFile(filepath.Join(dir, "gobgp", "notes"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := files(false); !slices.Equal(got, []string{gobgpSock}) {
		t.Errorf("with another file beside GoBGP's socket: removed %v", got)
	}
}
