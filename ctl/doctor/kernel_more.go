package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// What the doctor's newer checks read from the kernel: the forward-hook
// chains of nftables, the legacy iptables FORWARD chain, kernel modules and
// ICMP echo probes. They are methods of the same kernel (one network
// namespace).

// ForwardChains lists every nftables chain with its rules, marking the base
// chains of the forward hook (iptables-nft's FORWARD chain among them).
func (k *kernel) ForwardChains() ([]fwChain, error) {
	var opts []nftables.ConnOption
	if k.nsPath != "" {
		f, err := os.Open(k.nsPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var out []fwChain
	for _, ch := range chains {
		fc := fwChain{Family: familyName(ch.Table.Family), Table: ch.Table.Name, Name: ch.Name}
		if ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward && ch.Type == nftables.ChainTypeFilter {
			fc.Forward = true
			fc.Drop = ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
		}
		if fc.Rules, err = c.GetRules(ch.Table, ch); err != nil {
			return nil, fmt.Errorf("listing the rules of %s %s %s: %w", fc.Family, fc.Table, fc.Name, err)
		}
		out = append(out, fc)
	}
	return out, nil
}

// LegacyForward returns `iptables-legacy-save -t filter`'s FORWARD lines
// when the legacy (x_tables) filter table exists in the namespace; loaded
// is false when it does not. Reading it needs the iptables-legacy-save
// binary; without it err says so.
func (k *kernel) LegacyForward() (lines []string, loaded bool, err error) {
	var names []byte
	err = k.in(func() error {
		var err error
		names, err = os.ReadFile("/proc/net/ip_tables_names")
		return err
	})
	if err != nil || !bytes.Contains(append([]byte("\n"), names...), []byte("\nfilter\n")) {
		return nil, false, nil
	}
	bin, err := exec.LookPath("iptables-legacy-save")
	if err != nil {
		return nil, true, errors.New("the legacy iptables filter table is in use, and iptables-legacy-save is not installed here to read it")
	}
	var out []byte
	err = k.in(func() error {
		var err error
		out, err = exec.Command(bin, "-t", "filter").Output()
		return err
	})
	if err != nil {
		return nil, true, fmt.Errorf("iptables-legacy-save: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ":FORWARD ") || strings.HasPrefix(l, "-A FORWARD ") {
			lines = append(lines, l)
		}
	}
	return lines, true, nil
}

// Module reports a kernel module's state: loaded (or built in with
// parameters, both show in /sys/module), or available to load (modules.dep,
// modules.builtin of the running kernel); a kernel without module support
// has nothing to load. known is false when /lib/modules cannot be read (a
// container without it mounted), so "not available" cannot be told.
func (k *kernel) Module(name string) (loaded, available, known bool) {
	if _, err := os.Stat(filepath.Join(k.sysRoot(), "sys/module", name)); err == nil {
		return true, true, true
	}
	// A kernel built without module support (no /proc/modules) or with
	// loading disabled has what it has.
	if _, err := os.Stat(filepath.Join(k.sysRoot(), "proc/modules")); errors.Is(err, os.ErrNotExist) {
		return false, false, true
	}
	if b, err := os.ReadFile(filepath.Join(k.sysRoot(), "proc/sys/kernel/modules_disabled")); err == nil && strings.TrimSpace(string(b)) == "1" {
		return false, false, true
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false, false, false
	}
	dir := filepath.Join(k.sysRoot(), "lib/modules", unix.ByteSliceToString(u.Release[:]))
	found, readable := false, false
	for _, f := range []string{"modules.dep", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		readable = true
		for _, l := range strings.Split(string(b), "\n") {
			path, _, _ := strings.Cut(l, ":")
			base := filepath.Base(path)
			for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
				if base == name+ext {
					found = true
				}
			}
		}
	}
	return false, found, readable
}

// sysRoot is / (tests may point it elsewhere).
func (k *kernel) sysRoot() string {
	if k.root != "" {
		return k.root
	}
	return "/"
}

// errNoReply is a probe that timed out.
var errNoReply = errors.New("no reply")

// Ping sends one ICMP echo request of size bytes (IP header included) to
// dst and waits for the reply; with df the packet may not be fragmented on
// the way. An error from sending (EMSGSIZE: larger than the route's MTU)
// or errNoReply.
func (k *kernel) Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) error {
	if !dst.Is4() {
		return fmt.Errorf("only IPv4 is probed")
	}
	var conn net.PacketConn
	err := k.in(func() error {
		var err error
		conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("opening an ICMP socket: %w", err)
	}
	defer conn.Close()
	if df {
		rc, err := conn.(*net.IPConn).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting DF: %w", serr)
		}
	}
	id := os.Getpid() & 0xffff
	seq := int(time.Now().UnixNano() & 0x7fff)
	payload := size - 28
	if payload < 0 {
		payload = 0
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: bytes.Repeat([]byte{0x5a}, payload)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		if errors.Is(err, syscall.EMSGSIZE) {
			return fmt.Errorf("a %d-byte packet does not fit the route to %s (EMSGSIZE)", size, dst)
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errNoReply
			}
			return err
		}
		rm, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		switch rm.Type {
		case ipv4.ICMPTypeEchoReply:
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && from.String() == dst.String() {
				return nil
			}
		case ipv4.ICMPTypeDestinationUnreachable:
			// Only for our probe: the quoted header names dst.
			if du, ok := rm.Body.(*icmp.DstUnreach); ok && len(du.Data) >= 20 && netip.AddrFrom4([4]byte(du.Data[16:20])) == dst {
				if rm.Code == 4 {
					return fmt.Errorf("%s answered that fragmentation is needed (ICMP frag-needed)", from)
				}
				return fmt.Errorf("%s reports %s unreachable (ICMP code %d)", from, dst, rm.Code)
			}
		}
	}
}
