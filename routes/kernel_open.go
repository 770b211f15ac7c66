package routes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// OpenKernel opens the real kernel seams in the network namespace bound at
// nsPath ("" = this process's): the route Table, Devices over a netlink
// Handle, NAT over nftables, Sysctls and a Watcher subscribed to route,
// link and neighbour changes.
func OpenKernel(nsPath string, table uint32, proto uint8, vxlanName string) (*Kernel, error) {
	var closers []func() error
	fail := func(err error) (*Kernel, error) {
		for _, c := range closers {
			_ = c()
		}
		return nil, err
	}
	tbl, err := NewKernelTable(nsPath, table, proto)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, tbl.Close)
	var h *netlink.Handle
	if nsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		var ns netns.NsHandle
		if ns, err = netns.GetFromPath(nsPath); err == nil {
			h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
			ns.Close()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("netlink handle: %w", err))
	}
	closers = append(closers, func() error { h.Close(); return nil })
	w, err := newKernelWatcher(nsPath, tbl.PortID())
	if err != nil {
		return fail(err)
	}
	closers = append(closers, w.close)
	nat, err := newNFTablesNAT(nsPath)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, nat.close)
	return &Kernel{
		Table:   tbl,
		Devices: &kernelDevices{h: h, vxlanName: vxlanName},
		NAT:     nat,
		Sysctls: procSysctls{nsPath: nsPath},
		Watcher: w,
		Close: func() error {
			var errs []error
			for _, c := range closers {
				errs = append(errs, c())
			}
			return errors.Join(errs...)
		},
	}, nil
}

// inNetNS runs fn on a locked OS thread inside the namespace at nsPath
// ("" = run it right here). Files and sockets opened by fn keep that
// namespace. A thread that cannot switch back is discarded with its
// goroutine, so no other goroutine ever runs in the wrong namespace.
func inNetNS(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening network namespace %s: %w", nsPath, err)
			return
		}
		defer target.Close()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// procSysctls reads and writes /proc/sys (or root, a mount of it) as seen
// from the namespace.
type procSysctls struct{ nsPath, root string }

func (p procSysctls) path(key string) (string, error) {
	clean := filepath.Clean(key)
	if strings.HasPrefix(clean, "..") || filepath.IsAbs(clean) {
		return "", fmt.Errorf("bad sysctl key %q", key)
	}
	root := p.root
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, clean), nil
}

func (p procSysctls) Get(key string) (string, error) {
	path, err := p.path(key)
	if err != nil {
		return "", err
	}
	var v []byte
	err = inNetNS(p.nsPath, func() error {
		var err error
		v, err = os.ReadFile(path)
		return err
	})
	return strings.TrimSpace(string(v)), err
}

func (p procSysctls) Set(key, value string) error {
	path, err := p.path(key)
	if err != nil {
		return err
	}
	return inNetNS(p.nsPath, func() error { return os.WriteFile(path, []byte(value), 0o644) })
}

// kernelWatcher reads route, link and neighbour notifications.
type kernelWatcher struct {
	nsPath  string
	ownPort uint32
	mu      sync.Mutex
	fd      int // -1 after a failure: the next Watch subscribes anew
	rx      *mmsgBufs
}

// newKernelWatcher subscribes to route, link and neighbour changes. The
// kernel stamps a notification with the netlink port of the request that
// caused it, so a socket filter drops the echoes of our own route writes
// (port ownPort) inside the kernel: installing 100k routes would otherwise
// queue 100k notifications here, to be copied out and parsed only to be
// recognised as ours.
func newKernelWatcher(nsPath string, ownPort uint32) (*kernelWatcher, error) {
	fd, err := subscribe(nsPath, ownPort)
	if err != nil {
		return nil, err
	}
	return &kernelWatcher{nsPath: nsPath, ownPort: ownPort, fd: fd, rx: newMmsgBufs(64, 64<<10)}, nil
}

// subscribe opens the notification socket with its filter.
func subscribe(nsPath string, ownPort uint32) (int, error) {
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_NEIGH | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	fd, err := socketAt(nsPath, groups)
	if err != nil {
		return -1, err
	}
	if ownPort != 0 {
		// cBPF loads words big-endian; nlmsg_pid is in host order.
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], ownPort)
		prog := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}, // nlmsghdr.nlmsg_pid
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: binary.BigEndian.Uint32(b[:])},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		}
		fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("filtering our own route notifications: %w", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufSize); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufSize)
	}
	return fd, nil
}

func (w *kernelWatcher) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	err := unix.Close(w.fd)
	w.fd = -1
	return err
}

// Watch implements Watcher. It polls with a short timeout to notice ctx.
// After it failed, the next call subscribes on a new socket (what happened
// in between is lost: the caller makes a full pass).
func (w *kernelWatcher) Watch(ctx context.Context, fn func([]Event)) error {
	w.mu.Lock()
	if w.fd < 0 {
		fd, err := subscribe(w.nsPath, w.ownPort)
		if err != nil {
			w.mu.Unlock()
			return fmt.Errorf("subscribing to kernel notifications again: %w", err)
		}
		w.fd = fd
	}
	w.mu.Unlock()
	err := w.watch(ctx, fn)
	if err != nil {
		w.close()
	}
	return err
}

func (w *kernelWatcher) watch(ctx context.Context, fn func([]Event)) error {
	var evs []Event
	for ctx.Err() == nil {
		pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 250); err != nil && err != unix.EINTR {
			return fmt.Errorf("polling notifications: %w", err)
		}
		for {
			n, err := recvmmsg(w.fd, w.rx.msgs, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			if err == unix.ENOBUFS {
				evs = append(evs, Event{Kind: EventOverflow})
				continue
			}
			if err != nil {
				return fmt.Errorf("reading notifications: %w", err)
			}
			for i := 0; i < n; i++ {
				m := &w.rx.msgs[i]
				_ = walkMessages(w.rx.bufs[i][:m.n], func(typ, _ uint16, _ uint32, body []byte) error {
					if ev, ok := parseEvent(typ, body); ok {
						evs = append(evs, ev)
					}
					return nil
				})
				m.hdr.Flags = 0
			}
			if n < len(w.rx.msgs) {
				break
			}
		}
		if len(evs) > 0 {
			fn(evs)
			evs = evs[:0]
		}
	}
	return nil
}

// parseEvent decodes one notification.
func parseEvent(typ uint16, b []byte) (Event, bool) {
	switch typ {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		pr, ok := parseRouteMsg(b)
		if !ok {
			return Event{}, false
		}
		return Event{Kind: EventRoute, Deleted: typ == unix.RTM_DELROUTE, Route: pr.Route,
			Table: pr.table, Protocol: pr.protocol}, true
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		if len(b) < unix.SizeofIfInfomsg {
			return Event{}, false
		}
		ev := Event{Kind: EventLink, Deleted: typ == unix.RTM_DELLINK, LinkIndex: int(int32(getU32(b[4:8])))}
		forEachAttr(b[unix.SizeofIfInfomsg:], func(t uint16, v []byte) {
			if t == unix.IFLA_IFNAME {
				ev.LinkName = strings.TrimRight(string(v), "\x00")
			}
		})
		return ev, true
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		if len(b) < unix.SizeofNdMsg {
			return Event{}, false
		}
		return Event{Kind: EventNeigh, Deleted: typ == unix.RTM_DELNEIGH, LinkIndex: int(int32(getU32(b[4:8])))}, true
	}
	return Event{}, false
}
