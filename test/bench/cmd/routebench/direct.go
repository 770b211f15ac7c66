package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/routes"
	"github.com/rhizome-net/rhizome/test/bench/benchproc"
)

// nlbatch is the batched-netlink limit (subcommand `nlbatch`): no BGP, the
// N routes written straight into the kernel through routes.KernelTable,
// the same batched rtnetlink writer the agent uses (256 route messages per
// write, an ACK only on the last of each). It is the floor under any
// receiver that must first learn the routes. Events: START, DONE (with
// its CPU time and peak RSS).
func nlbatch(args []string) error {
	fs := flag.NewFlagSet("nlbatch", flag.ExitOnError)
	n := fs.Int("n", 1000, "number of /32 routes (10.0.0.0 + i)")
	gw := fs.String("gw", "172.31.255.1", "next hop")
	dev := fs.String("dev", "", "outgoing interface")
	del := fs.Bool("del", false, "delete the routes instead")
	batch := fs.Int("batch", 256, "route messages per write")
	_ = fs.Parse(args)
	link, err := netlink.LinkByName(*dev)
	if err != nil {
		return fmt.Errorf("interface %q: %w", *dev, err)
	}
	t, err := routes.NewKernelTable("", unix.RT_TABLE_MAIN, unix.RTPROT_STATIC)
	if err != nil {
		return err
	}
	defer t.Close()
	t.SetBatchSize(*batch)
	nh := []routes.NextHop{{Gateway: netip.MustParseAddr(*gw), LinkIndex: link.Attrs().Index}}
	rs := make([]routes.Route, *n)
	for i := range rs {
		rs[i] = routes.Route{Dst: prefixN(i), NextHops: nh}
	}
	benchproc.Event("START")
	if *del {
		err = t.Delete(rs)
	} else {
		err = t.Create(rs)
	}
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	benchproc.Event("DONE", "cpu_s", fmt.Sprintf("%.3f", float64(ru.Utime.Nano()+ru.Stime.Nano())/1e9), "vmhwm_kb", benchproc.VmHWM(os.Getpid()))
	return err
}

// prefixN is the benchmark's prefix i: 10.0.0.0 + i, /32.
func prefixN(i int) netip.Prefix {
	v := 10<<24 + uint32(i)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
}

// writeIPBatch writes the `ip -batch` files adding and deleting the routes.
func writeIPBatch(path string, n int, gw, dev string, del bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	verb := "add"
	if del {
		verb = "del"
	}
	for i := range n {
		fmt.Fprintf(w, "route %s %s via %s dev %s proto static\n", verb, prefixN(i), gw, dev)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
