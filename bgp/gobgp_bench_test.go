package bgp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/rib"
)

// The receive-path benchmark: a raw BGP feeder (pre-encoded UPDATEs, ~800
// /32s each, written the moment the session is up) sends N routes to an
// embedded GoBGP speaker over loopback, then withdraws them. Three
// receivers run interleaved in one invocation, none touches the kernel:
//
//	rhizome   GoBGP's pre-policy Adj-RIB-In watch → bgp.GoBGP's decoder →
//	          bgp/rib (import policy, selection, batches) → a counting sink
//	best      GoBGP's best-path watch, one event per path, prefixes decoded
//	          with anypb (the usual way to embed GoBGP) → a counting set
//	eor       GoBGP alone: time until it has processed the End-of-RIB that
//	          follows the table (its core, with no per-path events at all)
//
// Run: go test -run '^$' -bench ReceivePath -benchtime 5x ./bgp/
// (RHIZOME_BENCH_N=10000,100000 picks the sizes, RHIZOME_BENCH_VARIANTS
// the receivers.) Metrics are medians over
// the iterations, in seconds.

func BenchmarkReceivePath(b *testing.B) {
	sizes := []int{10000, 100000}
	if s := os.Getenv("RHIZOME_BENCH_N"); s != "" {
		sizes = nil
		for _, f := range splitComma(s) {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			feed := encodeTable(n)
			res := map[string][]float64{}
			variants := []string{"rhizome", "best", "eor"}
			if v := os.Getenv("RHIZOME_BENCH_VARIANTS"); v != "" {
				variants = splitComma(v)
			}
			for i := 0; b.Loop(); i++ {
				for _, v := range variants {
					settle(b)
					in, wd, heap := runReceiver(b, v, feed, i)
					res[v+"-install-s"] = append(res[v+"-install-s"], in.Seconds())
					res[v+"-heap-MiB"] = append(res[v+"-heap-MiB"], heap)
					if wd > 0 {
						res[v+"-withdraw-s"] = append(res[v+"-withdraw-s"], wd.Seconds())
					}
				}
			}
			for k, v := range res {
				b.ReportMetric(median(v), k)
			}
			if e := median(res["eor-install-s"]); e > 0 {
				b.ReportMetric(median(res["rhizome-install-s"])/e, "rhizome/eor")
				b.ReportMetric(median(res["best-install-s"])/e, "best/eor")
			}
		})
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

const (
	feederAS = 65001
	speakAS  = 65002
)

var (
	feederIP  = netip.MustParseAddr("127.0.0.201")
	speakerIP = netip.MustParseAddr("127.0.0.202")
)

// table is a pre-encoded feed: OPEN, the announcements, End-of-RIB and the
// withdrawals, each a byte stream ready to write.
type table struct {
	n                   int
	open, announce, eor []byte
	withdraw, keepalive []byte
}

func encodeTable(n int) *table {
	t := &table{n: n}
	open := gobgp.NewBGPOpenMessage(feederAS, 90, feederIP.String(), []gobgp.OptionParameterInterface{
		gobgp.NewOptionParameterCapability([]gobgp.ParameterCapabilityInterface{
			gobgp.NewCapMultiProtocol(gobgp.RF_IPv4_UC),
			gobgp.NewCapRouteRefresh(),
			gobgp.NewCapFourOctetASNumber(feederAS),
		}),
	})
	t.open = mustSerialize(open)
	t.keepalive = mustSerialize(gobgp.NewBGPKeepAliveMessage())
	attrs := []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(0),
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{feederAS})}),
		gobgp.NewPathAttributeNextHop(feederIP.String()),
	}
	const perUpdate = 800
	var nlri []*gobgp.IPAddrPrefix
	flush := func(withdraw bool) {
		if len(nlri) == 0 {
			return
		}
		if withdraw {
			t.withdraw = append(t.withdraw, mustSerialize(gobgp.NewBGPUpdateMessage(nlri, nil, nil))...)
		} else {
			t.announce = append(t.announce, mustSerialize(gobgp.NewBGPUpdateMessage(nil, attrs, nlri))...)
		}
		nlri = nil
	}
	for _, withdraw := range []bool{false, true} {
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			nlri = append(nlri, gobgp.NewIPAddrPrefix(32, a.String()))
			if len(nlri) == perUpdate {
				flush(withdraw)
			}
		}
		flush(withdraw)
	}
	t.eor = mustSerialize(gobgp.NewEndOfRib(gobgp.RF_IPv4_UC))
	return t
}

func mustSerialize(m *gobgp.BGPMessage) []byte {
	b, err := m.Serialize()
	if err != nil {
		panic(err)
	}
	return b
}

// counter is a rib.Sink and a best-path tally: it tracks how many prefixes
// are installed and signals when a target is reached.
type counter struct {
	mu     sync.Mutex
	set    map[netip.Prefix]struct{}
	target int
	done   chan struct{}
}

func newCounter(target int) *counter {
	return &counter{set: make(map[netip.Prefix]struct{}, target), target: target, done: make(chan struct{})}
}

func (c *counter) expect(target int) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.target, c.done = target, make(chan struct{})
	c.check()
	return c.done
}

func (c *counter) check() {
	if len(c.set) == c.target {
		select {
		case <-c.done:
		default:
			close(c.done)
		}
	}
}

func (c *counter) ApplyRoutes(b rib.Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range b.Set {
		c.set[r.Prefix] = struct{}{}
	}
	for _, p := range b.Withdraw {
		delete(c.set, p)
	}
	c.check()
}

func (c *counter) Converged() {}

// heapMiB is the live heap after a collection.
func heapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// runReceiver runs one receiver through one install and withdraw; heap is
// the live heap with the table installed.
func runReceiver(b *testing.B, variant string, t *table, iter int) (install, withdraw time.Duration, heap float64) {
	b.Helper()
	port := freePortB(b, speakerIP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cnt := newCounter(t.n)
	var eorAt atomic.Int64
	eorSeen := make(chan struct{})
	peer := bgp.Peer{Address: feederIP, ASN: feederAS, Passive: true}
	switch variant {
	case "rhizome":
		sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: quietLog()})
		if err := sp.Start(ctx, bgp.Global{ASN: speakAS, RouterID: speakerIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{speakerIP}}); err != nil {
			b.Fatal(err)
		}
		defer sp.Stop(context.Background())
		r := rib.New(rib.Config{Speaker: sp, Sink: cnt, Logger: quietLog()})
		r.Set(rib.Settings{
			Policy: policy.Compile(policy.Input{Peers: map[netip.Addr]policy.PeerPolicy{feederIP: {Rules: []policy.Rule{
				{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Op: policy.In, MinLen: -1, MaxLen: -1, Action: policy.Accept},
			}}}}),
			Peers: map[netip.Addr]rib.PeerInfo{feederIP: {EBGP: true}},
		})
		if err := sp.Watch(ctx, r); err != nil {
			b.Fatal(err)
		}
		if err := sp.AddPeer(ctx, peer); err != nil {
			b.Fatal(err)
		}
	case "best", "eor":
		// GoBGP used directly, as a typical embedding would.
		s := server.NewBgpServer(server.LoggerOption(quietGoBGPLog{}))
		go s.Serve()
		if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: speakAS, RouterId: speakerIP.String(), ListenPort: int32(port), ListenAddresses: []string{speakerIP.String()}}}); err != nil {
			b.Fatal(err)
		}
		defer s.Stop()
		req := &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST}}}}
		if variant == "eor" {
			req.Table.Filters[0].Type = api.WatchEventRequest_Table_Filter_EOR
		}
		err := s.WatchEvent(ctx, req, func(r *api.WatchEventResponse) {
			for _, p := range r.GetTable().GetPaths() {
				if p.Nlri == nil { // End-of-RIB
					eorAt.Store(time.Now().UnixNano())
					close(eorSeen)
					continue
				}
				var pfx api.IPAddressPrefix
				if err := p.Nlri.UnmarshalTo(&pfx); err != nil {
					panic(err)
				}
				a, _ := netip.ParseAddr(pfx.Prefix)
				cnt.mu.Lock()
				if p.IsWithdraw {
					delete(cnt.set, netip.PrefixFrom(a, int(pfx.PrefixLen)))
				} else {
					cnt.set[netip.PrefixFrom(a, int(pfx.PrefixLen))] = struct{}{}
				}
				cnt.check()
				cnt.mu.Unlock()
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: feederIP.String(), PeerAsn: feederAS},
			Transport: &api.Transport{PassiveMode: true},
		}}); err != nil {
			b.Fatal(err)
		}
	}

	conn, err := dialSession(t, port)
	if err != nil {
		b.Fatalf("%s: %v", variant, err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn) // keepalives and our routes
	installed := cnt.expect(t.n)
	t0 := time.Now()
	msgs := t.announce
	if variant == "eor" {
		msgs = append(slices.Clone(t.announce), t.eor...)
	}
	if _, err := conn.Write(msgs); err != nil {
		b.Fatal(err)
	}
	wait := installed
	if variant == "eor" {
		wait = eorSeen
	}
	select {
	case <-wait:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s: install timed out", variant)
	}
	install = time.Since(t0)
	if variant == "eor" {
		install = time.Duration(eorAt.Load() - t0.UnixNano())
		return install, 0, heapMiB()
	}
	heap = heapMiB()
	emptied := cnt.expect(0)
	t1 := time.Now()
	if _, err := conn.Write(t.withdraw); err != nil {
		b.Fatal(err)
	}
	select {
	case <-emptied:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s: withdraw timed out", variant)
	}
	return install, time.Since(t1), heap
}

// dialSession opens the feeder's session: OPEN both ways, KEEPALIVE both
// ways; on return the speaker is Established. Like a real peer it tries
// again when the speaker closes the connection (a GoBGP session that was
// just configured rejects connections for a moment, from Idle).
func dialSession(t *table, port uint16) (net.Conn, error) {
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var conn net.Conn
		if conn, err = handshake(t, port); err == nil {
			return conn, nil
		}
	}
	return nil, err
}

func handshake(t *table, port uint16) (net.Conn, error) {
	return handshakeFrom(t, feederIP, speakerIP, port)
}

// handshakeFrom opens a session from one address to a speaker and
// exchanges OPEN and KEEPALIVE.
func handshakeFrom(t *table, from, to netip.Addr, port uint16) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", netip.AddrPortFrom(to, port).String())
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) {
		conn.Close()
		return nil, err
	}
	if _, err := conn.Write(t.open); err != nil {
		return fail(err)
	}
	for got := 0; got < 2; { // their OPEN and KEEPALIVE
		var hdr [19]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return fail(fmt.Errorf("reading the speaker's OPEN: %w", err))
		}
		body := make([]byte, int(binary.BigEndian.Uint16(hdr[16:18]))-19)
		if _, err := io.ReadFull(conn, body); err != nil {
			return fail(err)
		}
		switch hdr[18] {
		case gobgp.BGP_MSG_OPEN, gobgp.BGP_MSG_KEEPALIVE:
			got++
		case gobgp.BGP_MSG_NOTIFICATION:
			return fail(fmt.Errorf("speaker sent a notification: % x", body))
		}
	}
	if _, err := conn.Write(t.keepalive); err != nil {
		return fail(err)
	}
	return conn, nil
}

func freePortB(b *testing.B, a netip.Addr) uint16 {
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// quietGoBGPLog is a GoBGP logger that logs nothing and checks its level
// first, as bgp.GoBGP's own does, so that the variants compare fairly.
type quietGoBGPLog struct{}

func (quietGoBGPLog) Panic(msg string, _ gobgplog.Fields) { panic(msg) }
func (quietGoBGPLog) Fatal(string, gobgplog.Fields)       {}
func (quietGoBGPLog) Error(string, gobgplog.Fields)       {}
func (quietGoBGPLog) Warn(string, gobgplog.Fields)        {}
func (quietGoBGPLog) Info(string, gobgplog.Fields)        {}
func (quietGoBGPLog) Debug(string, gobgplog.Fields)       {}
func (quietGoBGPLog) SetLevel(gobgplog.LogLevel)          {}
func (quietGoBGPLog) GetLevel() gobgplog.LogLevel         { return gobgplog.WarnLevel }

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// settle waits until the previous run has stopped using CPU (GoBGP goroutines
// of a stopped server finish their queues) and collects its garbage, so
// that each run starts from a quiet process.
func settle(b *testing.B) {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		runtime.GC()
		c0 := cpu()
		time.Sleep(200 * time.Millisecond)
		if cpu()-c0 < 10*time.Millisecond {
			return
		}
	}
}
