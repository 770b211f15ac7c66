package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/internal/nsthread"
)

// Kernel is the doctor's view of the node's kernel.
type Kernel interface {
	// Sysctl reads a key below /proc/sys, e.g. net/ipv4/ip_forward.
	Sysctl(key string) (string, error)
	// Links lists the interfaces.
	Links() ([]Link, error)
	// Routes lists the IPv4 and IPv6 routes of every table but local.
	Routes() ([]Route, error)
	// Masquerading reports whether nftables table inet <table> has a
	// masquerade rule.
	Masquerading(table string) (bool, error)
	// DialTCP opens (and closes) a TCP connection, for probing peers.
	DialTCP(ctx context.Context, addr string, timeout time.Duration) error
	// ForwardChains lists nftables chains with their rules, the forward
	// hook's base chains marked.
	ForwardChains() ([]fwChain, error)
	// LegacyForward is the legacy iptables FORWARD chain, if that table is
	// in use (see kernel_more.go).
	LegacyForward() (lines []string, loaded bool, err error)
	// Module reports whether a kernel module is loaded or can be.
	Module(name string) (loaded, available, known bool)
	// Ping sends one ICMP echo and waits for its reply.
	Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) error
}

// Link is an interface.
type Link struct {
	Name string
	Type string
	MTU  int
	Up   bool
}

// Route is a kernel route.
type Route struct {
	Dst      netip.Prefix
	Protocol int
	Table    int
	Dev      string
	Gateway  netip.Addr
	// Blackhole and other non-unicast types are named here.
	Type string
}

// NewKernel returns the Kernel of the network namespace bound at nsPath, or
// of the calling process when nsPath is empty.
func NewKernel(nsPath string) (Kernel, error) {
	k := &kernel{nsPath: nsPath}
	var err error
	if nsPath == "" {
		k.h, err = netlink.NewHandle()
	} else {
		var ns netns.NsHandle
		if ns, err = netns.GetFromPath(nsPath); err == nil {
			k.h, err = netlink.NewHandleAt(ns)
			ns.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %q: %w", nsPath, err)
	}
	return k, nil
}

type kernel struct {
	nsPath string
	h      *netlink.Handle
	// root is where /sys/module and /lib/modules are read ("" = /).
	root string
}

// in runs fn on a thread in the kernel's namespace (sysctls, sockets).
func (k *kernel) in(fn func() error) error {
	if k.nsPath == "" {
		return fn()
	}
	return nsthread.Do(k.nsPath, fn)
}

func (k *kernel) Sysctl(key string) (string, error) {
	var v []byte
	err := k.in(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys", filepath.Clean("/"+key)))
		return err
	})
	return strings.TrimSpace(string(v)), err
}

func (k *kernel) Links() ([]Link, error) {
	ls, err := k.h.LinkList()
	if err != nil {
		return nil, err
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		out = append(out, Link{Name: a.Name, Type: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0})
	}
	return out, nil
}

func (k *kernel) Routes() ([]Route, error) {
	names := map[int]string{}
	if ls, err := k.h.LinkList(); err == nil {
		for _, l := range ls {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Table == unix.RT_TABLE_LOCAL || r.Dst == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			rt := Route{Dst: netip.PrefixFrom(ip.Unmap(), ones), Protocol: int(r.Protocol), Table: r.Table, Dev: names[r.LinkIndex]}
			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				rt.Gateway = gw.Unmap()
			}
			switch r.Type {
			case unix.RTN_BLACKHOLE:
				rt.Type = "blackhole"
			case unix.RTN_UNREACHABLE:
				rt.Type = "unreachable"
			case unix.RTN_PROHIBIT:
				rt.Type = "prohibit"
			}
			out = append(out, rt)
		}
	}
	return out, nil
}

func (k *kernel) Masquerading(table string) (bool, error) {
	var opts []nftables.ConnOption
	if k.nsPath != "" {
		f, err := os.Open(k.nsPath)
		if err != nil {
			return false, err
		}
		defer f.Close()
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name != table {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return false, err
		}
		for _, ch := range chains {
			if ch.Table.Name != table {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return false, err
			}
			for _, r := range rules {
				for _, e := range r.Exprs {
					if _, ok := e.(*expr.Masq); ok {
						return true, nil
					}
				}
			}
		}
	}
	return false, nil
}

func (k *kernel) DialTCP(ctx context.Context, addr string, timeout time.Duration) error {
	return k.in(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
