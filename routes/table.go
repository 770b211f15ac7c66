package routes

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Table is the seam between the Reconciler and the kernel: one routing table
// seen through one routing-protocol number. Every method touches only routes
// carrying that protocol, so no implementation can list, change or delete
// anyone else's route — with one exception the Reconciler controls: Replace
// overwrites whatever holds the route's key (its destination, in this table
// at our metric), so it is used only for keys we own.
//
// Methods are safe for concurrent use but serialize: a Table has one socket.
// Writes are batched; the error of a write is nil or a *WriteError naming
// each route that failed, the others having succeeded. An error wrapping
// ErrUnknownOutcome means the kernel's answers were lost and the caller must
// List again to learn what happened.
type Table interface {
	// List returns every route of our protocol in our table, both address
	// families, normalized.
	List() ([]Route, error)
	// Create adds routes whose keys must be free: a key held by any route
	// (ours or foreign) fails that route with syscall.EEXIST, touching
	// nothing.
	Create(routes []Route) error
	// Replace adds or overwrites routes.
	Replace(routes []Route) error
	// Delete removes our routes with these destinations; a destination we
	// do not hold fails with syscall.ESRCH. Next hops are ignored.
	Delete(routes []Route) error
}

// ErrUnknownOutcome says that some kernel replies were lost (the reply
// socket overflowed): the routes may or may not have been written.
var ErrUnknownOutcome = errors.New("kernel replies lost, outcome unknown")

// RouteError is one route that a write failed to apply.
type RouteError struct {
	Route Route
	Err   error
}

// WriteError lists the routes of a batched write that failed.
type WriteError struct {
	Op     string
	Failed []RouteError
	// Err is set when the write failed as a whole (the socket broke).
	Err error
}

func (e *WriteError) Error() string {
	if e.Err != nil && len(e.Failed) == 0 {
		return fmt.Sprintf("%s routes: %v", e.Op, e.Err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d route(s) failed:", e.Op, len(e.Failed))
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(e.Failed)-3)
			break
		}
		fmt.Fprintf(&b, " %s: %v;", f.Route.Dst, f.Err)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, " (%v)", e.Err)
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *WriteError) Unwrap() error { return e.Err }

// KernelTable is the Table on a real kernel: a rtnetlink socket opened in
// the target network namespace, with batched writes.
type KernelTable struct {
	mu        sync.Mutex
	fd        int
	ra        routeAttrs
	batchSize int
	seq       uint32
	wbuf      []byte
	rx        *mmsgBufs
	closed    bool
}

// NewKernelTable opens a Table on routing table table (254 = main) for
// routes of protocol proto, in the network namespace bound at nsPath ("" =
// this process's namespace).
func NewKernelTable(nsPath string, table uint32, proto uint8) (*KernelTable, error) {
	fd, err := socketAt(nsPath, 0)
	if err != nil {
		return nil, err
	}
	t := &KernelTable{fd: fd, ra: routeAttrs{table: table, protocol: proto}, batchSize: defaultBatchSize,
		seq: uint32(time.Now().UnixNano()), rx: newMmsgBufs(64, 64<<10)}
	// Error replies without the request echoed (smaller), no extended ACKs.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	// Let the kernel filter dumps by table and protocol (Linux >= 4.20);
	// List filters again in case it does not.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufSize); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufSize)
	}
	// A reply that never comes (it cannot, but a bug must not hang the
	// agent) ends the wait after 30 s.
	tv := unix.NsecToTimeval((30 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return t, nil
}

// PortID is the netlink port of the table's socket. The kernel stamps it
// on the notifications our own writes cause, which lets the watcher drop
// those echoes (see kernelWatcher).
func (t *KernelTable) PortID() uint32 {
	sa, err := unix.Getsockname(t.fd)
	if nl, ok := sa.(*unix.SockaddrNetlink); err == nil && ok {
		return nl.Pid
	}
	return 0
}

// SetBatchSize sets how many route messages go into one write (1-4096);
// the benchmark uses it, the agent keeps the default.
func (t *KernelTable) SetBatchSize(n int) {
	t.mu.Lock()
	t.batchSize = min(max(n, 1), 4096)
	t.mu.Unlock()
}

// Close closes the socket. Routes stay in the kernel.
func (t *KernelTable) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return unix.Close(t.fd)
}

// List dumps both families and keeps our protocol's routes of our table.
func (t *KernelTable) List() ([]Route, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("route table closed")
	}
	var out []Route
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var err error
		// A dump that races with a change is flagged NLM_F_DUMP_INTR; its
		// content may be inconsistent, so it is taken again.
		for attempt := 0; ; attempt++ {
			var intr bool
			var got []Route
			got, intr, err = t.dump(fam)
			if err != nil || !intr {
				out = append(out, got...)
				break
			}
			if attempt == 9 {
				err = fmt.Errorf("route dump interrupted 10 times in a row")
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("listing routes of table %d protocol %d: %w", t.ra.table, t.ra.protocol, err)
		}
	}
	return out, nil
}

func (t *KernelTable) dump(fam uint8) (routes []Route, interrupted bool, err error) {
	t.seq++
	seq := t.seq
	req := make([]byte, 0, 64)
	req = append(req, 0, 0, 0, 0)
	req = appendU16(req, unix.RTM_GETROUTE)
	req = appendU16(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req = appendU32(req, seq)
	req = appendU32(req, 0)
	tbl := uint8(0)
	if t.ra.table < 256 {
		tbl = uint8(t.ra.table)
	}
	req = append(req, fam, 0, 0, 0, tbl, t.ra.protocol, 0, 0, 0, 0, 0, 0)
	req = appendU32Attr(req, unix.RTA_TABLE, t.ra.table)
	putU32(req, uint32(len(req)))
	if err := t.send(req); err != nil {
		return nil, false, err
	}
	for {
		n, err := recvmmsg(t.fd, t.rx.msgs, unix.MSG_WAITFORONE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading route dump: %w", err)
		}
		done := false
		for i := 0; i < n && !done; i++ {
			m := &t.rx.msgs[i]
			if m.hdr.Flags&unix.MSG_TRUNC != 0 {
				return nil, false, errTruncated
			}
			werr := walkMessages(t.rx.bufs[i][:m.n], func(typ, flags uint16, s uint32, body []byte) error {
				if s != seq {
					return nil // a late reply to an earlier write
				}
				if flags&unix.NLM_F_DUMP_INTR != 0 {
					interrupted = true
				}
				switch typ {
				case unix.NLMSG_DONE:
					done = true
				case unix.NLMSG_ERROR:
					done = true
					if e := errnoOf(body); e == unix.ENOENT {
						return nil // the table does not exist yet: empty
					} else if e != 0 {
						return e
					}
				case unix.RTM_NEWROUTE:
					pr, ok := parseRouteMsg(body)
					if ok && pr.table == t.ra.table && pr.protocol == t.ra.protocol {
						routes = append(routes, pr.Route)
					}
				}
				return nil
			})
			m.hdr.Flags = 0
			if werr != nil {
				return nil, false, werr
			}
		}
		if done {
			return routes, interrupted, nil
		}
	}
}

// Create implements Table.
func (t *KernelTable) Create(routes []Route) error { return t.write(opCreate, routes) }

// Replace implements Table.
func (t *KernelTable) Replace(routes []Route) error { return t.write(opReplace, routes) }

// Delete implements Table.
func (t *KernelTable) Delete(routes []Route) error { return t.write(opDelete, routes) }

// write sends the routes batchSize messages per write(2), asking for an
// ACK only on the last message of each write. The kernel handles a write's
// messages one after the other inside the system call and reports each
// failure with that message's sequence number, so after the last ACK every
// outcome is known. Replies are drained between writes so that they never
// pile up.
func (t *KernelTable) write(k opKind, routes []Route) error {
	if len(routes) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	we := &WriteError{Op: k.String()}
	if t.closed {
		we.Err = errors.New("route table closed")
		return we
	}
	base := t.seq + 1
	t.seq += uint32(len(routes))
	last := t.seq
	errs := map[uint32]syscall.Errno{}
	acked := false
	var lost error
	for i := 0; i < len(routes); i += t.batchSize {
		end := min(i+t.batchSize, len(routes))
		b := t.wbuf[:0]
		for j := i; j < end; j++ {
			b = appendRouteMsg(b, k, base+uint32(j), j == end-1, &routes[j], t.ra)
		}
		t.wbuf = b
		if err := t.send(b); err != nil {
			// The kernel took none of this write; name its routes.
			for j := i; j < end; j++ {
				errs[base+uint32(j)] = errnoOr(err)
			}
			if end == len(routes) {
				acked = true // no ACK will come for the last message
			}
		}
		if err := t.drain(base, last, errs, &acked, false); err != nil {
			lost = err
			break
		}
	}
	if lost == nil && !acked {
		lost = t.drain(base, last, errs, &acked, true)
	}
	for seq, e := range errs {
		we.Failed = append(we.Failed, RouteError{Route: routes[seq-base], Err: e})
	}
	if lost != nil {
		we.Err = lost
	}
	if len(we.Failed) == 0 && we.Err == nil {
		return nil
	}
	return we
}

func (t *KernelTable) send(b []byte) error {
	for {
		err := unix.Sendto(t.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != unix.EINTR {
			return err
		}
	}
}

// drain reads pending replies; with wait it blocks until the ACK of the
// message with sequence number last has arrived.
func (t *KernelTable) drain(base, last uint32, errs map[uint32]syscall.Errno, acked *bool, wait bool) error {
	for {
		flags := unix.MSG_DONTWAIT
		if wait {
			flags = unix.MSG_WAITFORONE
		}
		n, err := recvmmsg(t.fd, t.rx.msgs, flags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && !wait:
			return nil
		case err == unix.ENOBUFS:
			return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case err == unix.EAGAIN:
			return fmt.Errorf("%w: no reply from the kernel within 30 s", ErrUnknownOutcome)
		case err != nil:
			return fmt.Errorf("%w: reading replies: %v", ErrUnknownOutcome, err)
		}
		for i := 0; i < n; i++ {
			m := &t.rx.msgs[i]
			_ = walkMessages(t.rx.bufs[i][:m.n], func(typ, _ uint16, seq uint32, body []byte) error {
				if typ != unix.NLMSG_ERROR || seq-base > last-base {
					return nil
				}
				if e := errnoOf(body); e != 0 {
					errs[seq] = e
				}
				if seq == last {
					*acked = true
				}
				return nil
			})
			m.hdr.Flags = 0
		}
		if *acked || (!wait && n < len(t.rx.msgs)) {
			return nil
		}
	}
}

// errnoOf returns the error code of an NLMSG_ERROR body (0 = ACK).
func errnoOf(body []byte) syscall.Errno {
	if len(body) < 4 {
		return unix.EINVAL
	}
	return syscall.Errno(-int32(getU32(body)))
}

func errnoOr(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
