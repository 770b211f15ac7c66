package bfd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/internal/nsthread"
)

// UDP is the real Transport: UDP sockets in the process's network
// namespace, or in NetNS.
type UDP struct {
	// NetNS, if set, is the path of the network namespace to open the
	// sockets in (tests run several managers in one process); a socket
	// stays in the namespace it was made in.
	NetNS string

	mu     sync.Mutex
	conns  []*net.UDPConn
	closed bool
	wg     sync.WaitGroup
}

var _ Transport = (*UDP)(nil)

// tosInternetControl is the IP precedence of routing protocol traffic
// (CS6), which queues on routers and NICs favour.
const tosInternetControl = 0xc0

// sourcePortTries bounds the random picks of a free source port.
const sourcePortTries = 256

func (u *UDP) inNS(fn func() error) error {
	if u.NetNS == "" {
		return fn()
	}
	return nsthread.Do(u.NetNS, fn)
}

// Serve listens on port 3784 of every IPv4 and IPv6 address, asking the
// kernel for each datagram's TTL (hop limit) and destination address. A
// kernel without IPv6 leaves the IPv4 socket alone.
func (u *UDP) Serve(h func(b []byte, src, dst netip.Addr, ttl int)) error {
	var v4, v6 *net.UDPConn
	err := u.inNS(func() error {
		var err error
		if v4, err = listen("udp4", fmt.Sprintf("0.0.0.0:%d", Port), recvOpts4); err != nil {
			return fmt.Errorf("listening on UDP %d (IPv4): %w", Port, err)
		}
		if v6, err = listen("udp6", fmt.Sprintf("[::]:%d", Port), recvOpts6); err != nil {
			if errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) {
				v6, err = nil, nil
			} else {
				_ = v4.Close()
				return fmt.Errorf("listening on UDP %d (IPv6): %w", Port, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		_ = v4.Close()
		if v6 != nil {
			_ = v6.Close()
		}
		return ErrClosed
	}
	for _, c := range []*net.UDPConn{v4, v6} {
		if c == nil {
			continue
		}
		u.conns = append(u.conns, c)
		u.wg.Add(1)
		go u.read(c, h)
	}
	return nil
}

func listen(network, addr string, opts func(fd int) error) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = opts(int(fd)) }); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func recvOpts4(fd int) error {
	return errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1))
}

func recvOpts6(fd int) error {
	return errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
}

func (u *UDP) read(c *net.UDPConn, h func(b []byte, src, dst netip.Addr, ttl int)) {
	defer u.wg.Done()
	buf := make([]byte, 512)
	oob := make([]byte, 256)
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. a truncated control message; the next read is fine
		}
		dst, ttl := parseControl(oob[:oobn])
		h(buf[:n], from.Addr(), dst, ttl)
	}
}

// parseControl picks the destination address and TTL (hop limit) out of a
// datagram's control messages; -1 when the TTL is missing.
func parseControl(oob []byte) (dst netip.Addr, ttl int) {
	ttl = -1
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return dst, ttl
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL && len(m.Data) >= 4,
			m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4:
			ttl = int(int32(binary.NativeEndian.Uint32(m.Data)))
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			dst = netip.AddrFrom4([4]byte(m.Data[8:12]))
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16:
			// struct in6_pktinfo { in6_addr addr; int ifindex; }
			dst = netip.AddrFrom16([16]byte(m.Data[:16]))
		}
	}
	return dst, ttl
}

// Open binds a socket for one session to a free source port of 49152–65535
// (RFC 5881 4: one port per session, unique on the system) that sends with
// TTL 255 and precedence CS6.
func (u *UDP) Open(local, remote netip.Addr) (Sender, error) {
	remote = remote.Unmap()
	network, unspec := "udp4", netip.IPv4Unspecified()
	opts := sendOpts4
	if remote.Is6() {
		network, unspec, opts = "udp6", netip.IPv6Unspecified(), sendOpts6
	}
	if !local.IsValid() {
		local = unspec
	}
	var c *net.UDPConn
	err := u.inNS(func() error {
		var err error
		for range sourcePortTries {
			port := SourcePortMin + rand.IntN(SourcePortMax-SourcePortMin+1)
			c, err = listen(network, netip.AddrPortFrom(local.Unmap(), uint16(port)).String(), opts)
			if !errors.Is(err, syscall.EADDRINUSE) {
				return err
			}
		}
		return fmt.Errorf("no free source port in %d-%d after %d tries: %w", SourcePortMin, SourcePortMax, sourcePortTries, err)
	})
	if err != nil {
		return nil, fmt.Errorf("opening a BFD socket from %s: %w", local, err)
	}
	return &udpSender{c: c, to: netip.AddrPortFrom(remote, Port)}, nil
}

func sendOpts4(fd int) error {
	return errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, TTL),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tosInternetControl))
}

func sendOpts6(fd int) error {
	return errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, TTL),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tosInternetControl))
}

type udpSender struct {
	c  *net.UDPConn
	to netip.AddrPort
}

func (s *udpSender) Send(b []byte) error {
	_, err := s.c.WriteToUDPAddrPort(b, s.to)
	return err
}

func (s *udpSender) Close() error { return s.c.Close() }

// LocalPort returns the sender's source port (for tests and status).
func (s *udpSender) LocalPort() uint16 { return s.c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

// Close stops receiving and waits for the readers to end.
func (u *UDP) Close() error {
	u.mu.Lock()
	u.closed = true
	conns := u.conns
	u.conns = nil
	u.mu.Unlock()
	var errs []error
	for _, c := range conns {
		errs = append(errs, c.Close())
	}
	u.wg.Wait()
	return errors.Join(errs...)
}
