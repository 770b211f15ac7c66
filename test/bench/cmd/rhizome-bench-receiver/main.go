// Command rhizome-bench-receiver is the `rhizome` receiver of the
// route-install benchmark (test/bench): the agent's receive path without
// the Kubernetes parts. It runs inside the benchmark's receiver namespace:
//
//	embedded GoBGP (bgp.GoBGP, per-UPDATE Adj-RIB-In events)
//	  -> bgp/rib (import policy, path selection, ECMP, session loss, GR)
//	  -> agent/ribsink (+ internal/burstgc) -> routes.Reconciler.Apply (batched rtnetlink)
//
// The feeder's session is passive eBGP; everything inside 0.0.0.0/0 is
// accepted. GoBGP gets the import policy as its import check, as the
// agent's speaker does (every received path is judged there too). With
// -from-node N the feeder is judged as one of our nodes instead (design
// note 0014): the first N prefixes are addresses its pods borrowed from
// /26 blocks of another node, so every path costs what a mesh peer's does
// at its dearest (block lookup, borrower lookup, next hop's node) in the
// RIB and in the import check. It stays in the foreground until SIGTERM. (go.mod turns
// Go's default MPTCP listener off, as the agent needs.)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/agent/ribsink"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/internal/burstgc"
	"github.com/rhizome-net/rhizome/routes"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rhizome-bench-receiver:", err)
		os.Exit(1)
	}
}

func run() error {
	local := flag.String("local", "172.31.255.2", "our address")
	peer := flag.String("peer", "172.31.255.1", "the feeder's address")
	as := flag.Uint("as", 65002, "our AS")
	peerAS := flag.Uint("peer-as", 65001, "the feeder's AS")
	plen := flag.Int("plen", 30, "prefix length of our subnet")
	gc := flag.Int("gc", -2, "GOGC percent (-2: leave the runtime default)")
	burstGOGC := flag.Int("burst-gogc", burstgc.DefaultPercent, "GOGC during route bursts, as the agent's --burst-gogc (-1: off)")
	burstCap := flag.Int("burst-heap-cap-mib", 0, "heap goal bound during bursts, as the agent's --burst-heap-cap-mib")
	verbose := flag.Bool("v", false, "debug logs")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memprofile := flag.String("memprofile", "", "write an allocation profile of the whole run here (every allocation sampled at 64 KiB)")
	tracefile := flag.String("trace", "", "write a runtime execution trace of the whole run here (go tool trace -pprof=sched shows where goroutines waited for a CPU)")
	fromNode := flag.Int("from-node", 0, "judge the feeder as one of our nodes whose pods borrowed its first N prefixes (10.0.0.0 + i) from /26 blocks of another node (0: an external peer)")
	flag.Parse()
	if *memprofile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(*memprofile)
			if err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	for _, r := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{
		{*cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{*tracefile, trace.Start, trace.Stop},
	} {
		if r.path == "" {
			continue
		}
		done, err := record(r.path, r.start, r.stop)
		if err != nil {
			return err
		}
		defer done()
	}
	if *gc != -2 {
		debug.SetGCPercent(*gc)
	}
	lvl := slog.LevelInfo
	if *verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	self, err := netip.ParseAddr(*local)
	if err != nil {
		return err
	}
	feeder, err := netip.ParseAddr(*peer)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	rec, err := routes.New(routes.Config{Address: netip.PrefixFrom(self, *plen), Logger: log})
	if err != nil {
		return err
	}
	defer rec.Close()
	if err := rec.SetState(routes.State{}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	for rec.Status().Passes == 0 {
		time.Sleep(10 * time.Millisecond)
	}

	spk := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: log})
	if err := spk.Start(ctx, bgp.Global{ASN: uint32(*as), RouterID: self}); err != nil {
		return err
	}
	defer spk.Stop(context.Background())
	tuner := burstgc.New(burstgc.Config{Percent: *burstGOGC, HeapCap: uint64(*burstCap) << 20, Logger: log})
	defer tuner.Close()
	r := rib.New(rib.Config{Speaker: spk, Sink: ribsink.New(rec, tuner, log), Logger: log})
	im := importPolicy(self, feeder, *fromNode)
	r.Set(rib.Settings{Policy: im, Peers: map[netip.Addr]rib.PeerInfo{feeder: {EBGP: true}}})
	if err := spk.SetImportCheck(ctx, im.Check, nil, true); err != nil {
		return err
	}
	go r.Run(ctx)
	if err := spk.Watch(ctx, r); err != nil {
		return err
	}
	if err := spk.SetExportPolicy(ctx, bgp.ExportPolicy{}); err != nil {
		return err
	}
	if err := spk.AddPeer(ctx, bgp.Peer{Address: feeder, ASN: uint32(*peerAS), Passive: true}); err != nil {
		return err
	}
	log.Info("receiver ready", "peer", feeder)
	<-ctx.Done()
	return <-done
}

// importPolicy is the policy of an external feeder whose filter accepts
// everything, or (fromNode > 0) of a feeder judged as one of our nodes.
func importPolicy(self, feeder netip.Addr, fromNode int) *policy.Import {
	if fromNode <= 0 {
		return policy.Compile(policy.Input{
			OwnAddresses: []netip.Addr{self},
			Peers: map[netip.Addr]policy.PeerPolicy{feeder: {Rules: []policy.Rule{
				{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Op: policy.In, MinLen: -1, MaxLen: -1, Action: policy.Accept},
			}}},
		})
	}
	base := netip.MustParseAddr("10.0.0.0").As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	addr := func(i int) netip.Addr {
		v := start + uint32(i)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	var blocks []policy.OwnedBlock
	for i := 0; i < fromNode; i += 64 {
		blocks = append(blocks, policy.OwnedBlock{CIDR: netip.PrefixFrom(addr(i), 26), Node: "lender"})
	}
	borrowed := make(map[netip.Addr]string, fromNode)
	for i := range fromNode {
		borrowed[addr(i)] = "feeder"
	}
	return policy.Compile(policy.Input{
		Pools:        []policy.Pool{{Name: "bench", CIDR: netip.MustParsePrefix("10.0.0.0/8"), BlockBits: 26}},
		Owners:       policy.NewOwners(blocks, borrowed),
		Nodes:        policy.NewNodes([]policy.NodeInfo{{Name: "feeder", Addresses: []netip.Addr{feeder}, RouterID: feeder}, {Name: "self", Addresses: []netip.Addr{self}, RouterID: self}}),
		OwnAddresses: []netip.Addr{self},
		Peers:        map[netip.Addr]policy.PeerPolicy{feeder: {Internal: true, Node: "feeder"}},
	})
}

// record starts a recorder (CPU profile, execution trace) writing to a new
// file at path; the returned func stops it and closes the file.
func record(path string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("recording to %s: %w", path, err)
	}
	return func() { stop(); _ = f.Close() }, nil
}
