package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the hand-written rtnetlink codec and socket behind the kernel
// Table. vishvananda/netlink does one request and one ACK round trip per
// route and allocates a full netlink.Route per message; measured on this
// project's benchmark machine that caps a Go agent at ~60k routes/s, slower
// than BIRD. Writing up to batchSize route messages per sendmsg(2), asking
// for an ACK only on the last one (the kernel reports every failure anyway,
// with the failing message's sequence number) is what reaches the kernel's
// own limit. See docs/design/0002-routes.md for the numbers.

const (
	rtmsgLen  = 12 // struct rtmsg
	nlmsgLen  = unix.NLMSG_HDRLEN
	rtaHdrLen = 4
	// defaultBatchSize is how many route messages go into one write(2).
	defaultBatchSize = 256
	// rcvBufSize is forced on the socket (SO_RCVBUFFORCE, needs
	// CAP_NET_ADMIN, which the agent has anyway) so that the error replies
	// of a whole batch never overflow it.
	rcvBufSize = 32 << 20
)

type opKind uint8

const (
	opCreate  opKind = iota // NLM_F_CREATE|NLM_F_EXCL: never overwrites anyone's route
	opReplace               // NLM_F_CREATE|NLM_F_REPLACE: only for keys we own
	opDelete                // RTM_DELROUTE with our protocol: cannot hit a foreign route
)

func (k opKind) String() string {
	switch k {
	case opCreate:
		return "create"
	case opReplace:
		return "replace"
	}
	return "delete"
}

// routeAttrs are the fields every message of a Table shares.
type routeAttrs struct {
	table    uint32
	protocol uint8
	metric   uint32
}

func align4(n int) int { return (n + 3) &^ 3 }

func putAttrHdr(b []byte, l int, typ uint16) {
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := rtaHdrLen + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for i := l; i < align4(l); i++ {
		b = append(b, 0)
	}
	return b
}

func appendU32Attr(b []byte, typ uint16, v uint32) []byte {
	b = binary.NativeEndian.AppendUint16(b, 8)
	b = binary.NativeEndian.AppendUint16(b, typ)
	return binary.NativeEndian.AppendUint32(b, v)
}

func appendAddrAttr(b []byte, typ uint16, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return appendAttr(b, typ, v[:])
	}
	v := a.As16()
	return appendAttr(b, typ, v[:])
}

func family(p netip.Prefix) uint8 {
	if p.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// appendRouteMsg encodes one RTM_NEWROUTE/RTM_DELROUTE message.
func appendRouteMsg(b []byte, k opKind, seq uint32, ack bool, r *Route, ra routeAttrs) []byte {
	start := len(b)
	flags := uint16(unix.NLM_F_REQUEST)
	typ := uint16(unix.RTM_NEWROUTE)
	switch k {
	case opCreate:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	case opReplace:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	case opDelete:
		typ = unix.RTM_DELROUTE
	}
	if ack {
		flags |= unix.NLM_F_ACK
	}
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set below
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel

	tbl := uint8(unix.RT_TABLE_UNSPEC)
	if ra.table < 256 {
		tbl = uint8(ra.table)
	}
	scope, rtype := uint8(unix.RT_SCOPE_UNIVERSE), uint8(unix.RTN_UNICAST)
	var rflags uint32
	switch {
	case k == opDelete:
		// Match whatever type and scope our route has; the protocol below
		// makes sure the kernel never deletes anyone else's route.
		scope, rtype = unix.RT_SCOPE_NOWHERE, unix.RTN_UNSPEC
	case r.Kind == Blackhole:
		rtype = unix.RTN_BLACKHOLE
	case len(r.NextHops) == 1 && r.NextHops[0].OnLink:
		rflags = unix.RTNH_F_ONLINK
	}
	b = append(b, family(r.Dst), uint8(r.Dst.Bits()), 0, 0, tbl, ra.protocol, scope, rtype)
	b = binary.NativeEndian.AppendUint32(b, rflags)
	b = appendAddrAttr(b, unix.RTA_DST, r.Dst.Addr())
	b = appendU32Attr(b, unix.RTA_TABLE, ra.table)
	if ra.metric != 0 {
		b = appendU32Attr(b, unix.RTA_PRIORITY, ra.metric)
	}
	if k != opDelete && r.Kind == Unicast {
		if len(r.NextHops) == 1 {
			b = appendAddrAttr(b, unix.RTA_GATEWAY, r.NextHops[0].Gateway)
			b = appendU32Attr(b, unix.RTA_OIF, uint32(r.NextHops[0].LinkIndex))
		} else {
			mp := len(b)
			b = append(b, 0, 0, 0, 0) // RTA_MULTIPATH header
			for _, nh := range r.NextHops {
				nhStart := len(b)
				b = append(b, 0, 0, 0, 0) // rtnh_len, rtnh_flags, rtnh_hops
				b = binary.NativeEndian.AppendUint32(b, uint32(nh.LinkIndex))
				if nh.OnLink {
					b[nhStart+2] = unix.RTNH_F_ONLINK
				}
				b = appendAddrAttr(b, unix.RTA_GATEWAY, nh.Gateway)
				binary.NativeEndian.PutUint16(b[nhStart:], uint16(len(b)-nhStart))
			}
			putAttrHdr(b[mp:], len(b)-mp, unix.RTA_MULTIPATH)
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// parsedRoute is a route read from the kernel with the fields a Table
// filters on.
type parsedRoute struct {
	Route
	table    uint32
	protocol uint8
	metric   uint32
}

// kindOther marks kernel route types we never write (unreachable,
// prohibit...): such a route of our protocol differs from anything desired.
const kindOther Kind = 255

func addrFrom(b []byte) (netip.Addr, bool) {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)), true
	case 16:
		return netip.AddrFrom16([16]byte(b)), true
	}
	return netip.Addr{}, false
}

// forEachAttr calls fn for every rtattr in b.
func forEachAttr(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= rtaHdrLen {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < rtaHdrLen || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:4])&^unix.NLA_F_NESTED, b[rtaHdrLen:l])
		if align4(l) >= len(b) {
			return
		}
		b = b[align4(l):]
	}
}

// parseRouteMsg decodes the body of an RTM_NEWROUTE/RTM_DELROUTE message.
func parseRouteMsg(b []byte) (parsedRoute, bool) {
	var pr parsedRoute
	if len(b) < rtmsgLen {
		return pr, false
	}
	fam, dstLen, tbl, proto, rtype := b[0], int(b[1]), b[4], b[5], b[7]
	flags := binary.NativeEndian.Uint32(b[8:12])
	if fam != unix.AF_INET && fam != unix.AF_INET6 {
		return pr, false
	}
	pr.table, pr.protocol = uint32(tbl), proto
	switch rtype {
	case unix.RTN_UNICAST:
		pr.Kind = Unicast
	case unix.RTN_BLACKHOLE:
		pr.Kind = Blackhole
	default:
		pr.Kind = kindOther
	}
	var dst, gw netip.Addr
	oif := 0
	forEachAttr(b[rtmsgLen:], func(typ uint16, v []byte) {
		switch typ {
		case unix.RTA_DST:
			dst, _ = addrFrom(v)
		case unix.RTA_GATEWAY:
			gw, _ = addrFrom(v)
		case unix.RTA_OIF:
			if len(v) == 4 {
				oif = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_TABLE:
			if len(v) == 4 {
				pr.table = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_PRIORITY:
			if len(v) == 4 {
				pr.metric = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_MULTIPATH:
			for len(v) >= 8 {
				l := int(binary.NativeEndian.Uint16(v[0:2]))
				if l < 8 || l > len(v) {
					break
				}
				nh := NextHop{LinkIndex: int(int32(binary.NativeEndian.Uint32(v[4:8]))), OnLink: v[2]&unix.RTNH_F_ONLINK != 0}
				forEachAttr(v[8:l], func(t uint16, a []byte) {
					if t == unix.RTA_GATEWAY {
						nh.Gateway, _ = addrFrom(a)
					}
				})
				pr.NextHops = append(pr.NextHops, nh)
				if align4(l) >= len(v) {
					break
				}
				v = v[align4(l):]
			}
		}
	})
	if !dst.IsValid() {
		if fam == unix.AF_INET {
			dst = netip.IPv4Unspecified()
		} else {
			dst = netip.IPv6Unspecified()
		}
	}
	p, err := dst.Prefix(dstLen)
	if err != nil {
		return pr, false
	}
	pr.Dst = p
	if pr.Kind == Unicast && len(pr.NextHops) == 0 && (gw.IsValid() || oif != 0) {
		pr.NextHops = []NextHop{{Gateway: gw, LinkIndex: oif, OnLink: flags&unix.RTNH_F_ONLINK != 0}}
	}
	if pr.Kind != Unicast {
		pr.NextHops = nil
	}
	pr.Normalize()
	return pr, true
}

// walkMessages calls fn for every netlink message in buf.
func walkMessages(buf []byte, fn func(typ, flags uint16, seq uint32, body []byte) error) error {
	for len(buf) >= nlmsgLen {
		l := int(binary.NativeEndian.Uint32(buf[0:4]))
		if l < nlmsgLen || l > len(buf) {
			return fmt.Errorf("malformed netlink message (length %d of %d)", l, len(buf))
		}
		if err := fn(binary.NativeEndian.Uint16(buf[4:6]), binary.NativeEndian.Uint16(buf[6:8]),
			binary.NativeEndian.Uint32(buf[8:12]), buf[nlmsgLen:l]); err != nil {
			return err
		}
		if align4(l) >= len(buf) {
			return nil
		}
		buf = buf[align4(l):]
	}
	return nil
}

// socketAt opens a NETLINK_ROUTE socket inside the network namespace at
// nsPath ("" = the caller's), bound to the given multicast groups. The
// socket keeps its namespace for life; the thread that entered the
// namespace is thrown away if it cannot return (see test/netns).
func socketAt(nsPath string, groups uint32) (int, error) {
	open := func() (int, error) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return -1, fmt.Errorf("netlink socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("binding netlink socket: %w", err)
		}
		return fd, nil
	}
	fd := -1
	err := inNetNS(nsPath, func() error {
		var err error
		fd, err = open()
		return err
	})
	return fd, err
}

// recvmmsg reads up to len(msgs) datagrams; it returns how many it read.
func recvmmsg(fd int, msgs []mmsghdr, flags int) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])),
		uintptr(len(msgs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// mmsghdr is struct mmsghdr (x/sys/unix has no recvmmsg wrapper).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// mmsgBufs is a set of receive buffers for recvmmsg.
//
// The buffers (count × size, 4 MiB for 64 × 64 KiB) live in an anonymous
// mapping outside the Go heap. Mostly only their first page is ever
// written (one notification or ACK per buffer), so little of them is
// resident; in the heap they would count in full toward the GC's goal, and
// an idle agent with two of them let ~8 MiB more garbage accumulate before
// collecting. The mapping is released once the mmsgBufs is unreachable:
// nothing can receive into it after that.
type mmsgBufs struct {
	bufs [][]byte
	iovs []unix.Iovec
	msgs []mmsghdr
}

func newMmsgBufs(count, size int) *mmsgBufs {
	m := &mmsgBufs{bufs: make([][]byte, count), iovs: make([]unix.Iovec, count), msgs: make([]mmsghdr, count)}
	mem, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		mem = make([]byte, count*size) // no address space to map: the heap will do
	} else {
		runtime.AddCleanup(m, func(mem []byte) { _ = unix.Munmap(mem) }, mem)
	}
	for i := range m.msgs {
		m.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(size)
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m
}

var errTruncated = errors.New("netlink message truncated")

func appendU16(b []byte, v uint16) []byte { return binary.NativeEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.NativeEndian.AppendUint32(b, v) }
func putU32(b []byte, v uint32)           { binary.NativeEndian.PutUint32(b, v) }
func getU32(b []byte) uint32              { return binary.NativeEndian.Uint32(b) }
