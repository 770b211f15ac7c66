package routes

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// The route programmer leaves its kernel state in place when it stops, on
// purpose: an agent restart or upgrade must not drop a route. Cleanup is
// the other half, for an uninstall (`rhizome-agent cleanup`), run once the
// agent is gone for good: an agent still running would put it all back.

// CleanupOptions say where Cleanup looks and what is the route programmer's.
type CleanupOptions struct {
	// NSPath is the network namespace ("" = this process's).
	NSPath string
	// Table and Protocol are the agent's kernel route table and protocol
	// (BGPConfiguration routeTable and routeProtocol: 254 and 114 unless
	// changed).
	Table    uint32
	Protocol uint8
	// VXLANDevice is the VXLAN device's name (DefaultVXLANDevice).
	VXLANDevice string
	// DryRun finds the state without removing it.
	DryRun bool
}

// Leftovers is the route programmer's state found in a namespace.
type Leftovers struct {
	// Routes are the routes of the table and protocol, both families.
	Routes []Route
	// VXLANDevice is the VXLAN device's name if it exists and is VXLAN (a
	// device of another type by that name is not ours and is left alone).
	VXLANDevice string
	// NATTable is true if the natOutgoing table (datapath.NATTable) exists.
	NATTable bool
}

// Empty reports whether nothing was found.
func (l Leftovers) Empty() bool {
	return len(l.Routes) == 0 && l.VXLANDevice == "" && !l.NATTable
}

// Lines describes the leftovers, one thing a line.
func (l Leftovers) Lines() []string {
	var out []string
	if n := len(l.Routes); n > 0 {
		ex := make([]string, 0, 3)
		for _, r := range l.Routes[:min(n, 3)] {
			ex = append(ex, r.Dst.String())
		}
		more := ""
		if n > 3 {
			more = ", ..."
		}
		out = append(out, fmt.Sprintf("%d routes of protocol and table (%s%s)", n, strings.Join(ex, ", "), more))
	}
	if l.VXLANDevice != "" {
		out = append(out, "VXLAN device "+l.VXLANDevice)
	}
	if l.NATTable {
		out = append(out, "nftables table inet "+datapath.NATTable)
	}
	return out
}

// Cleanup finds the route programmer's state in a namespace and, unless
// o.DryRun, removes it: its routes (blocks, blackholes, routes to other
// nodes, host routes of lent addresses), its VXLAN device (with the static
// neighbour and FDB entries on it) and its nftables table. It touches
// nothing else: routes of other protocols or tables, a non-VXLAN device that
// happens to have the VXLAN device's name, other nftables tables, and tunl0
// (the kernel's own IPIP device, which exists as long as the ipip module is
// loaded). It returns what it found, which is what it removed when the
// error is nil.
func Cleanup(o CleanupOptions) (Leftovers, error) {
	var found Leftovers
	var errs []error
	tbl, err := NewKernelTable(o.NSPath, o.Table, o.Protocol)
	if err != nil {
		return found, err
	}
	defer tbl.Close()
	if found.Routes, err = tbl.List(); err != nil {
		return found, err
	}
	if !o.DryRun {
		if err := tbl.Delete(found.Routes); err != nil {
			errs = append(errs, fmt.Errorf("deleting routes: %w", err))
		}
	}

	h, err := netlinkHandleAt(o.NSPath)
	if err != nil {
		return found, errors.Join(append(errs, err)...)
	}
	defer h.Close()
	if l, err := h.LinkByName(o.VXLANDevice); err == nil {
		if _, ours := l.(*netlink.Vxlan); ours {
			found.VXLANDevice = o.VXLANDevice
			if !o.DryRun {
				if err := h.LinkDel(l); err != nil {
					errs = append(errs, fmt.Errorf("deleting %s: %w", o.VXLANDevice, err))
				}
			}
		}
	} else if _, notFound := err.(netlink.LinkNotFoundError); !notFound {
		errs = append(errs, fmt.Errorf("looking for %s: %w", o.VXLANDevice, err))
	}

	nat, err := newNFTablesNAT(o.NSPath)
	if err != nil {
		return found, errors.Join(append(errs, err)...)
	}
	defer nat.close()
	cur, err := nat.current()
	if err != nil {
		return found, errors.Join(append(errs, err)...)
	}
	found.NATTable = cur != nil
	if found.NATTable && !o.DryRun {
		if err := nat.Sync(NATSpec{}); err != nil {
			errs = append(errs, err)
		}
	}
	return found, errors.Join(errs...)
}

// netlinkHandleAt opens a netlink handle in the namespace at nsPath ("" =
// this process's).
func netlinkHandleAt(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	return h, nil
}
