package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/bench/bgpwire"
)

// feeder is the BGP speaker that feeds the receiver (subcommand `feeder`),
// run in the feeder's namespace. It encodes the whole table before it
// connects, as UPDATEs packed to the 4096-byte limit (~800 /32s each), and
// writes it at once when the session is Established, followed by
// End-of-RIB, so that its own cost (a few ms for 100k routes) is negligible
// next to any receiver's. SIGUSR1 sends the withdrawals the same way.
//
// Events: ESTABLISHED (t0 of the install), SENT, WITHDRAW (t0 of the
// withdrawal), DOWN.
func feeder(args []string) error {
	fs := flag.NewFlagSet("feeder", flag.ExitOnError)
	n := fs.Int("n", 1000, "number of /32 prefixes (10.0.0.0 + i)")
	local := fs.String("local", "172.31.255.1", "our address (router ID, next hop)")
	peer := fs.String("peer", "172.31.255.2", "receiver address")
	as := fs.Uint("as", 65001, "our AS")
	peerAS := fs.Uint("peer-as", 65002, "receiver AS")
	_ = fs.Parse(args)
	if *n < 1 || *n > 1<<24 {
		return fmt.Errorf("-n %d: 1 to 16M prefixes fit in 10.0.0.0/8", *n)
	}
	self := netip.MustParseAddr(*local)
	announce := encodeUpdates(*n, uint32(*as), self, false)
	withdraw := encodeUpdates(*n, uint32(*as), self, true)

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: self.AsSlice()}, Timeout: time.Second}
	var conn net.Conn
	for conn == nil {
		c, err := d.Dial("tcp4", net.JoinHostPort(*peer, "179"))
		if err == nil {
			conn = c
			break
		}
		select {
		case <-sig:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := conn.Write(b)
		return err
	}
	if err := write(bgpwire.Open(uint32(*as), self, 90)); err != nil {
		return fmt.Errorf("sending OPEN: %w", err)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	for established := false; !established; {
		typ, body, err := bgpwire.ReadMsg(r)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		switch typ {
		case 1: // OPEN
			if pa := bgpwire.PeerAS(body); pa != uint32(*peerAS) {
				return fmt.Errorf("peer AS %d, want %d", pa, *peerAS)
			}
			if err := write(bgpwire.Msg(4, nil)); err != nil {
				return err
			}
		case 3:
			return fmt.Errorf("peer sent NOTIFICATION %x", body)
		case 4:
			established = true
		}
	}
	benchproc.Event("ESTABLISHED")
	if err := write(append(announce, bgpwire.Msg(2, []byte{0, 0, 0, 0})...)); err != nil {
		return fmt.Errorf("sending the table: %w", err)
	}
	benchproc.Event("SENT")
	go func() {
		for range time.Tick(30 * time.Second) {
			if write(bgpwire.Msg(4, nil)) != nil {
				return
			}
		}
	}()
	go func() {
		for {
			typ, body, err := bgpwire.ReadMsg(r)
			if err != nil || typ == 3 {
				benchproc.Event("DOWN", "err", fmt.Sprintf("%q", fmt.Sprint(err, body)))
				return
			}
		}
	}()
	for s := range sig {
		if s != syscall.SIGUSR1 {
			return conn.Close()
		}
		benchproc.Event("WITHDRAW")
		if err := write(withdraw); err != nil {
			return fmt.Errorf("sending withdrawals: %w", err)
		}
	}
	return nil
}

// encodeUpdates packs prefixes 10.0.0.0+i/32 into UPDATEs of at most 4096
// bytes: announcements (ORIGIN IGP, AS_PATH as, NEXT_HOP nh) or
// withdrawals.
func encodeUpdates(n int, as uint32, nh netip.Addr, withdraw bool) []byte {
	var attrs []byte
	if !withdraw {
		attrs = []byte{0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0, 0, 0x40, 3, 4}
		binary.BigEndian.PutUint32(attrs[9:], as)
		v := nh.As4()
		attrs = append(attrs, v[:]...)
	}
	per := (4096 - 19 - 4 - len(attrs)) / 5
	var out []byte
	for i := 0; i < n; i += per {
		var nlri []byte
		for j := i; j < min(i+per, n); j++ {
			nlri = append(nlri, 32)
			nlri = binary.BigEndian.AppendUint32(nlri, 10<<24+uint32(j))
		}
		var body []byte
		if withdraw {
			body = binary.BigEndian.AppendUint16(body, uint16(len(nlri)))
			body = append(append(body, nlri...), 0, 0)
		} else {
			body = append([]byte{0, 0}, byte(len(attrs)>>8), byte(len(attrs)))
			body = append(append(body, attrs...), nlri...)
		}
		out = append(out, bgpwire.Msg(2, body)...)
	}
	return out
}
