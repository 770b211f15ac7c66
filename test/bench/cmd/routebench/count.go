package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
)

// count is the route counter (subcommand `count`), run inside the receiver's
// namespace. It subscribes to IPv4 route notifications before taking one
// dump, then keeps the set of matching routes (table main, inside
// 10.0.0.0/8, one protocol) from notifications only: re-reading 100k routes
// to poll would cost ~0.1 s of CPU each time and disturb the receiver under
// test. While notifications flow it drains the socket every millisecond
// (recvmmsg, many per call) instead of waking per message, which would
// slow the receiver on a 2-core machine; idle, it blocks in poll(2). The
// reported instants are therefore at most ~1 ms late.
//
// Events: READY (subscribed, dumped), FIRST, FULL (count reached -target),
// EMPTY (back to 0 after FULL), STATS (on SIGTERM, with the counter's CPU).
// On ENOBUFS (notifications lost) it dumps again (RESYNC).
func count(args []string) error {
	fs := flag.NewFlagSet("count", flag.ExitOnError)
	target := fs.Int("target", 1, "FULL when this many routes are present")
	proto := fs.Int("proto", -1, "count only this rtm_protocol (-1: any)")
	_ = fs.Parse(args)
	runtime.GOMAXPROCS(1)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 512<<20); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_ROUTE}); err != nil {
		return err
	}
	c := &counter{proto: *proto, set: make(map[uint64]struct{}, *target)}
	if err := c.dump(); err != nil {
		return err
	}
	benchproc.Event("READY", "count", len(c.set))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	const batch, size = 128, 32 << 10
	bufs := make([][]byte, batch)
	iovs := make([]unix.Iovec, batch)
	msgs := make([]mmsghdr, batch)
	for i := range msgs {
		bufs[i] = make([]byte, size)
		iovs[i].Base, msgs[i].hdr.Iov = &bufs[i][0], &iovs[i]
		iovs[i].SetLen(size)
		msgs[i].hdr.SetIovlen(1)
	}
	first, full, empty := len(c.set) > 0, false, false
	resyncs := 0
	check := func() {
		n := len(c.set)
		if !first && n > 0 {
			first = true
			benchproc.Event("FIRST", "count", n)
		}
		if !full && n >= *target {
			full = true
			benchproc.Event("FULL", "count", n)
		}
		if full && !empty && n == 0 {
			empty = true
			benchproc.Event("EMPTY")
		}
	}
	for {
		select {
		case <-sig:
			var ru unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
			benchproc.Event("STATS", "cpu_s", fmt.Sprintf("%.3f", float64(ru.Utime.Nano()+ru.Stime.Nano())/1e9), "resyncs", resyncs, "count", len(c.set))
			return nil
		default:
		}
		got := 0
		for {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				break
			}
			if e == unix.ENOBUFS {
				resyncs++
				if err := c.dump(); err != nil {
					return err
				}
				benchproc.Event("RESYNC", "count", len(c.set))
				got++
				continue
			}
			if e != 0 {
				return fmt.Errorf("recvmmsg: %w", e)
			}
			for i := 0; i < int(r); i++ {
				c.walk(bufs[i][:msgs[i].n], false)
				check()
			}
			got += int(r)
			if int(r) < batch {
				break
			}
		}
		check()
		if got == 0 {
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 200)
			continue
		}
		time.Sleep(time.Millisecond)
	}
}

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

type counter struct {
	proto int
	set   map[uint64]struct{}
}

// walk applies the route messages in buf; it reports NLMSG_DONE.
func (c *counter) walk(buf []byte, dump bool) (done bool) {
	for len(buf) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(buf))
		if l < unix.NLMSG_HDRLEN || l > len(buf) {
			return false
		}
		typ := binary.NativeEndian.Uint16(buf[4:])
		switch typ {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			return true
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			if k, ok := c.key(buf[unix.NLMSG_HDRLEN:l]); ok {
				if typ == unix.RTM_NEWROUTE || dump {
					c.set[k] = struct{}{}
				} else {
					delete(c.set, k)
				}
			}
		}
		buf = buf[min((l+3)&^3, len(buf)):]
	}
	return false
}

// key identifies a matching route: destination, length, metric.
func (c *counter) key(b []byte) (uint64, bool) {
	if len(b) < 12 || b[0] != unix.AF_INET || (c.proto >= 0 && int(b[5]) != c.proto) {
		return 0, false
	}
	table, dst, prio := uint32(b[4]), uint32(0), uint32(0)
	for a := b[12:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		if l < 4 || l > len(a) {
			break
		}
		v := a[4:l]
		switch binary.NativeEndian.Uint16(a[2:]) {
		case unix.RTA_DST:
			dst = binary.BigEndian.Uint32(v)
		case unix.RTA_TABLE:
			table = binary.NativeEndian.Uint32(v)
		case unix.RTA_PRIORITY:
			prio = binary.NativeEndian.Uint32(v)
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	if table != unix.RT_TABLE_MAIN || dst>>24 != 10 {
		return 0, false
	}
	return uint64(dst)<<32 | uint64(b[1])<<24 | uint64(prio&0xffffff), true
}

// dump rebuilds the set from a full route dump on a separate socket.
func (c *counter) dump() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	req := make([]byte, unix.NLMSG_HDRLEN+12)
	binary.NativeEndian.PutUint32(req, uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETROUTE)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[unix.NLMSG_HDRLEN] = unix.AF_INET
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	clear(c.set)
	buf := make([]byte, 1<<20)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if c.walk(buf[:n], true) {
			return nil
		}
	}
}
