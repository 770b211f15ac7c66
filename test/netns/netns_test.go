//go:build privileged

package netns

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestVethAddressPing(t *testing.T) {
	a, b := New(t, "a"), New(t, "b")
	if err := Veth(a, "eth0", b, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := AddAddr(a, "eth0", Prefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := AddAddr(b, "eth0", Prefix("192.0.2.2/24")); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Exec(context.Background(), "ping", "-c1", "-W2", "192.0.2.2"); err != nil {
		t.Fatalf("ping across the veth pair: %v\n%s", err, out)
	}
}

func TestBridgeAndRoute(t *testing.T) {
	br, h1, h2 := New(t, "br"), New(t, "h1"), New(t, "h2")
	if err := Bridge(br, "br0"); err != nil {
		t.Fatal(err)
	}
	for i, h := range []*NS{h1, h2} {
		port := []string{"p1", "p2"}[i]
		if err := Veth(br, port, h, "eth0"); err != nil {
			t.Fatal(err)
		}
		if err := SetMaster(br, port, "br0"); err != nil {
			t.Fatal(err)
		}
	}
	must(t, AddAddr(h1, "eth0", Prefix("198.51.100.1/24")))
	must(t, AddAddr(h2, "eth0", Prefix("198.51.100.2/24")))
	// A route to a prefix behind h2 through the bridge.
	must(t, AddRoute(h1, Prefix("203.0.113.0/24"), netip.MustParseAddr("198.51.100.2")))
	out, err := h1.Exec(context.Background(), "ip", "route", "show", "203.0.113.0/24")
	must(t, err)
	if !strings.Contains(string(out), "via 198.51.100.2") {
		t.Fatalf("route not installed: %s", out)
	}
	if out, err := h1.Exec(context.Background(), "ping", "-c1", "-W2", "198.51.100.2"); err != nil {
		t.Fatalf("ping across the bridge: %v\n%s", err, out)
	}
}

func TestDoRunsInsideAndRestores(t *testing.T) {
	n := New(t, "do")
	before := netnsInode(t, "/proc/thread-self/ns/net")
	var inside uint64
	err := n.Do(func() error {
		inside = netnsInode(t, "/proc/thread-self/ns/net")
		return nil
	})
	must(t, err)
	if want := netnsInode(t, n.Path()); inside != want {
		t.Fatalf("Do ran in namespace inode %d, want %d", inside, want)
	}
	if after := netnsInode(t, "/proc/thread-self/ns/net"); after != before {
		t.Fatalf("caller's namespace changed: %d -> %d", before, after)
	}
}

func TestSweepRemovesLeftoversOfDeadProcess(t *testing.T) {
	RequireRoot(t)
	// A PID that certainly belonged to a process that has exited.
	dead := exec.Command("true")
	must(t, dead.Run())
	name := "rztsweep" + itoa(dead.Process.Pid) + "-left"
	n, err := Create(name)
	must(t, err)
	t.Cleanup(func() { n.Delete() })
	sleeper := n.Cmd(context.Background(), "sleep", "300")
	must(t, sleeper.Start())
	waitErr := make(chan error, 1)
	go func() { waitErr <- sleeper.Wait() }()
	// Let `ip netns exec` exec into sleep inside the namespace.
	time.Sleep(200 * time.Millisecond)

	swept := Sweep("rztsweep")
	if len(swept) != 1 || swept[0] != name {
		t.Fatalf("Sweep = %v, want [%s]", swept, name)
	}
	if _, err := os.Stat(n.Path()); !os.IsNotExist(err) {
		t.Fatalf("namespace %s still exists: %v", name, err)
	}
	select {
	case <-waitErr:
	case <-time.After(5 * time.Second):
		t.Fatal("the process inside the swept namespace was not killed")
	}
	// A namespace whose creator lives is left alone.
	live := New(t, "live")
	if got := Sweep(TestPrefix); len(got) != 0 {
		t.Fatalf("Sweep removed live namespaces: %v", got)
	}
	if _, err := os.Stat(live.Path()); err != nil {
		t.Fatal(err)
	}
}
