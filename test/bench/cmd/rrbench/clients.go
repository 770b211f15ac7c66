package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/bench/bgpwire"
)

// clientsTool is subcommand `clients`: one process speaking N real BGP
// sessions to the reflector, client i from its own address (run in the
// clients' namespace, where the harness put the addresses). It reads
// commands from stdin, one per line, each with a phase number P that names
// its events:
//
//	connect P     every client dials and completes the handshake; UP-P when all are Established
//	announce P    every client sends its prefixes; ANNOUNCED-P, then SAT-P
//	flap K P      K clients, spread evenly, close their connections; FLAPPED-P, then SAT-P
//	rejoin P      the flapped clients dial again, and once all are up announce; UP-P, ANNOUNCED-P, SAT-P
//	stats P       STATS-P with counters
//
// SAT-P is printed the first time after the command that every client
// whose session is up holds exactly the prefixes announced by the other
// clients that are up: the reflector has spread the change everywhere.
// A session the reflector closes prints DOWN (the harness fails the run).
func clientsTool(args []string) error {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	n := fs.Int("n", 10, "number of clients")
	rr := fs.String("rr", rrAddr, "the reflector's address")
	parallel := fs.Int("dial-parallel", 64, "connection attempts in flight")
	hold := fs.Int("hold", 90, "hold time offered, seconds (keepalives every third)")
	_ = fs.Parse(args)
	if *n < 1 || *n > maxClients {
		return fmt.Errorf("-n %d: 1 to %d clients", *n, maxClients)
	}
	t := &clients{w: newWorld(*n), rr: netip.MustParseAddr(*rr), parallel: *parallel, hold: uint16(*hold)}
	t.sess = make([]*session, *n)
	for i := range t.sess {
		t.sess[i] = &session{id: i, addr: clientAddr(i)}
	}
	go t.keepalives(time.Duration(*hold) * time.Second / 3)
	benchproc.Event("READY", "clients", *n, "prefixes", len(t.w.prefixes))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		phase := f[len(f)-1]
		var err error
		switch f[0] {
		case "connect":
			err = t.connect(phase, t.all())
		case "announce":
			t.announce(phase, t.all())
		case "flap":
			k, _ := strconv.Atoi(f[1])
			t.flap(phase, k)
		case "rejoin":
			if err = t.connect(phase, t.flapped); err == nil {
				t.announce(phase, t.flapped)
			}
		case "stats":
			benchproc.Event("STATS-"+phase, "updates", t.w.updates.Load(), "nlri", t.w.nlri.Load(),
				"withdrawn", t.w.wdr.Load(), "stray", t.w.stray.Load(), "down", t.down.Load())
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			benchproc.Event("FAILED-"+phase, "error", strconv.Quote(err.Error()))
		}
	}
	return sc.Err()
}

type clients struct {
	w        *world
	rr       netip.Addr
	parallel int
	hold     uint16
	sess     []*session
	flapped  []int
	down     atomic.Int64 // sessions the reflector closed

	mu      sync.Mutex
	waiting string // phase whose SAT is due
}

// session is one client's connection.
type session struct {
	id   int
	addr netip.Addr
	wmu  sync.Mutex // serialises writes
	conn net.Conn
	// closing is set when we close the session on purpose.
	closing atomic.Bool
}

func (t *clients) all() []int {
	out := make([]int, len(t.sess))
	for i := range out {
		out[i] = i
	}
	return out
}

// expect arms SAT-phase and prints it at once if the goal already holds.
func (t *clients) expect(phase string) {
	t.mu.Lock()
	t.waiting = phase
	t.mu.Unlock()
	t.check()
}

// check prints the awaited SAT event once the goal holds.
func (t *clients) check() {
	if !t.w.done() {
		return
	}
	t.mu.Lock()
	p := t.waiting
	t.waiting = ""
	t.mu.Unlock()
	if p != "" {
		benchproc.Event("SAT-" + p)
	}
}

// connect establishes the sessions of cs, retrying each until it is up.
func (t *clients) connect(phase string, cs []int) error {
	sem := make(chan struct{}, t.parallel)
	var wg sync.WaitGroup
	var failed atomic.Value
	deadline := time.Now().Add(30 * time.Minute)
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for {
				err := t.dial(t.sess[c])
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					failed.Store(fmt.Errorf("client %d (%s): %w", c, t.sess[c].addr, err))
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	benchproc.Event("UP-"+phase, "clients", len(cs))
	return nil
}

// dial opens one session: OPEN, KEEPALIVE, End-of-RIB (nothing announced
// yet), then its reader.
func (t *clients) dial(s *session) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: s.addr.AsSlice()}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp4", net.JoinHostPort(t.rr.String(), "179"))
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReaderSize(conn, 8<<10)
	if _, err := conn.Write(bgpwire.Open(asn, s.addr, t.hold)); err != nil {
		conn.Close()
		return err
	}
	for established := false; !established; {
		typ, body, err := bgpwire.ReadMsg(r)
		if err != nil {
			conn.Close()
			return fmt.Errorf("handshake: %w", err)
		}
		switch typ {
		case bgpwire.TypeOpen:
			if as := bgpwire.PeerAS(body); as != asn {
				conn.Close()
				return fmt.Errorf("reflector AS %d, want %d", as, asn)
			}
			if _, err := conn.Write(bgpwire.Keepalive()); err != nil {
				conn.Close()
				return err
			}
		case bgpwire.TypeNotification:
			conn.Close()
			return fmt.Errorf("NOTIFICATION %x during the handshake", body)
		case bgpwire.TypeKeepalive:
			established = true
		}
	}
	_ = conn.SetDeadline(time.Time{})
	// Its table is empty until it announces: End-of-RIB at once, as a
	// BGP speaker with nothing to send does.
	if _, err := conn.Write(bgpwire.EndOfRIB()); err != nil {
		conn.Close()
		return err
	}
	s.wmu.Lock()
	s.conn = conn
	s.closing.Store(false)
	s.wmu.Unlock()
	t.w.setUp(s.id, true)
	go t.read(s, conn, r)
	return nil
}

// read handles what the reflector sends one client until the session ends.
// It parses in place (no allocation per message): at N clients the
// reflector sends ~N² UPDATEs.
func (t *clients) read(s *session, conn net.Conn, r *bufio.Reader) {
	err := func() error {
		for {
			h, err := r.Peek(bgpwire.HeaderLen)
			if err != nil {
				return err
			}
			l := int(h[16])<<8 | int(h[17])
			if l < bgpwire.HeaderLen || l > r.Size() {
				return bgpwire.ErrLength
			}
			m, err := r.Peek(l)
			if err != nil {
				return err
			}
			switch m[18] {
			case bgpwire.TypeUpdate:
				if err := t.w.receive(s.id, m[bgpwire.HeaderLen:]); err != nil {
					return err
				}
				t.check()
			case bgpwire.TypeNotification:
				return fmt.Errorf("NOTIFICATION %x", m[bgpwire.HeaderLen:])
			}
			_, _ = r.Discard(l)
		}
	}()
	if s.closing.Load() {
		return
	}
	t.down.Add(1)
	benchproc.Event("DOWN", "client", s.id, "error", strconv.Quote(fmt.Sprint(err)))
	conn.Close()
	t.w.setUp(s.id, false)
	t.check()
}

// write sends b on client c's session.
func (t *clients) write(s *session, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.conn == nil {
		return errors.New("not connected")
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := s.conn.Write(b)
	return err
}

// announce has clients cs send their prefixes at once.
func (t *clients) announce(phase string, cs []int) {
	msgs := make([][]byte, len(cs))
	for k, c := range cs {
		msgs[k] = bgpwire.IBGPUpdate(t.sess[c].addr, announced(c, t.w.n))
	}
	t.w.announce(cs)
	benchproc.Event("ANNOUNCED-"+phase, "clients", len(cs))
	t.expect(phase)
	var wg sync.WaitGroup
	for k, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := t.write(t.sess[c], msgs[k]); err != nil {
				benchproc.Event("FAILED-"+phase, "client", c, "error", strconv.Quote(err.Error()))
			}
		}()
	}
	wg.Wait()
}

// flap closes the sessions of k clients spread over the range.
func (t *clients) flap(phase string, k int) {
	k = max(1, min(k, len(t.sess)))
	t.flapped = t.flapped[:0]
	for j := range k {
		t.flapped = append(t.flapped, j*len(t.sess)/k+len(t.sess)/(2*k))
	}
	benchproc.Event("FLAPPED-"+phase, "clients", k)
	for _, c := range t.flapped {
		s := t.sess[c]
		s.wmu.Lock()
		s.closing.Store(true)
		if s.conn != nil {
			s.conn.Close()
			s.conn = nil
		}
		s.wmu.Unlock()
		t.w.setUp(c, false)
	}
	t.expect(phase)
}

// keepalives sends a KEEPALIVE on every session each interval.
func (t *clients) keepalives(every time.Duration) {
	ctx := context.Background()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		for _, s := range t.sess {
			_ = t.write(s, bgpwire.Keepalive())
		}
	}
}
