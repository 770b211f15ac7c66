//go:build linux && privileged

package routes

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// TestCleanupRemovesWhatTheProgrammerLeft runs real route programmers with
// VXLAN, natOutgoing and remote routes, stops them (their state stays, as
// an agent's does on a restart), and checks that Cleanup finds it all,
// removes it all on the second call, finds nothing on the third, and never
// touches what is not the route programmer's: routes of another protocol,
// another table's routes of protocol 114, another nftables table, a bridge
// device that has the VXLAN device's name in another node.
func TestCleanupRemovesWhatTheProgrammerLeft(t *testing.T) {
	l := newLab(t)
	pool := poolVXLAN
	pool.NATOutgoing = true
	l.startAll(pool)
	n1, n2 := l.nodes[0], l.nodes[1]
	for _, n := range l.nodes {
		n.stop()
	}
	// What is not ours.
	l.ip(n1.ns, "route", "add", "10.99.0.0/24", "via", "192.168.10.1", "proto", "static")
	l.ip(n1.ns, "route", "add", "10.98.0.0/24", "via", "192.168.10.1", "proto", "114", "table", "100")
	if out, err := n1.ns.Exec(context.Background(), "nft", "add", "table", "inet", "someone-else"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	l.ip(n2.ns, "link", "del", "vxlan.rhizome")
	l.ip(n2.ns, "link", "add", "vxlan.rhizome", "type", "bridge") // no dummy module here
	foreign := func() []string {
		return []string{
			l.ip(n1.ns, "route", "show", "proto", "static"),
			l.ip(n1.ns, "route", "show", "table", "100"),
		}
	}
	before := foreign()

	opts := CleanupOptions{NSPath: n1.ns.Path(), Table: 254, Protocol: 114, VXLANDevice: DefaultVXLANDevice, DryRun: true}
	found, err := Cleanup(opts)
	must(t, err)
	// Its own block's blackhole and the routes to the two other blocks.
	if len(found.Routes) != 3 || found.VXLANDevice != "vxlan.rhizome" || !found.NATTable {
		t.Fatalf("dry run found %+v, want 3 routes, the VXLAN device and the NAT table", found)
	}
	if got := l.ip(n1.ns, "route", "show", "proto", "114"); strings.Count(got, "\n") != 3 {
		t.Fatalf("a dry run removed routes; left:\n%s", got)
	}

	opts.DryRun = false
	removed, err := Cleanup(opts)
	must(t, err)
	if len(removed.Routes) != 3 || removed.VXLANDevice == "" || !removed.NATTable {
		t.Errorf("removed %+v", removed)
	}
	t.Logf("removed: %s", strings.Join(removed.Lines(), "; "))
	if got := l.ip(n1.ns, "route", "show", "proto", "114"); got != "" {
		t.Errorf("routes of protocol 114 left in the main table:\n%s", got)
	}
	if out, err := n1.ns.Exec(context.Background(), "ip", "link", "show", "vxlan.rhizome"); err == nil {
		t.Errorf("vxlan.rhizome left:\n%s", out)
	}
	tables, err := n1.ns.Exec(context.Background(), "nft", "list", "tables")
	must(t, err)
	if strings.Contains(string(tables), datapath.NATTable) || !strings.Contains(string(tables), "someone-else") {
		t.Errorf("nftables tables after the cleanup:\n%s", tables)
	}
	if after := foreign(); !slices.Equal(after, before) {
		t.Errorf("routes that are not ours changed:\nbefore %q\nafter  %q", before, after)
	}
	if found, err := Cleanup(opts); err != nil || !found.Empty() {
		t.Errorf("a second cleanup found %+v (%v)", found, err)
	}

	// n2's vxlan.rhizome is a bridge now: not ours.
	found, err = Cleanup(CleanupOptions{NSPath: n2.ns.Path(), Table: 254, Protocol: 114, VXLANDevice: DefaultVXLANDevice})
	must(t, err)
	if found.VXLANDevice != "" {
		t.Errorf("the cleanup took n2's bridge for ours: %+v", found)
	}
	if out := l.ip(n2.ns, "link", "show", "vxlan.rhizome"); !strings.Contains(out, "vxlan.rhizome") {
		t.Errorf("n2's bridge is gone")
	}
}
