//go:build privileged

package interop

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bird is BIRD 2 acting as the ToR.
type bird struct {
	l    *lab
	dir  string
	sock string
	p    *proc
	n    int
	// extra is added to the protocol bgp block (e.g. "ttl security on;").
	extra string
	// bfd, if set, is BIRD's BFD for the session: its bgp `bfd` mode
	// ("on" or "graceful") and its interval (rx = tx) and multiplier.
	bfd *routerBFD
}

// routerBFD is a real router's BFD setting for the session to the node.
type routerBFD struct {
	mode       string
	interval   time.Duration
	multiplier int
}

// birdConfigWith: eBGP to the node with an MD5 password, graceful restart, and
// the given routes announced (as blackholes, never installed: there is no
// kernel protocol).
func birdConfigWith(dir, password string, routes []string, extra string, b *routerBFD) string {
	var static strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&static, "  route %s blackhole;\n", r)
	}
	var bfdProto, bfdBGP string
	if b != nil {
		ms := b.interval.Milliseconds()
		bfdProto = fmt.Sprintf("protocol bfd {\n  interface \"eth0\" {\n    min rx interval %d ms;\n    min tx interval %d ms;\n    multiplier %d;\n  };\n}\n", ms, ms, b.multiplier)
		// After a BFD failure BIRD waits its error wait time (60 s by
		// default) before it accepts the session again.
		bfdBGP = "  bfd " + b.mode + ";\n  error wait time 1, 10;\n"
	}
	return fmt.Sprintf(`router id %s;
log "%s/bird.log" all;
protocol device {}
%sprotocol static announced {
  ipv4;
%s}
protocol bgp node {
%s  local %s as %d;
  neighbor %s as %d;
  password "%s";
  hold time 9;
  keepalive time 3;
  connect retry time 2;
  graceful restart on;
  graceful restart time 10;
  ipv4 { import all; export where proto = "announced"; };
  %s
}
`, torIP, dir, bfdProto, static.String(), bfdBGP, torIP, torAS, nodeIP, nodeAS, password, extra)
}

func (l *lab) startBIRD(password string, routes []string) *bird {
	l.t.Helper()
	return l.startBIRDWith(password, routes, "")
}

// startBIRDWith starts BIRD with extra lines in its BGP protocol block.
func (l *lab) startBIRDWith(password string, routes []string, extra string) *bird {
	l.t.Helper()
	return l.startBIRDConfig(password, routes, extra, nil)
}

// startBIRDBFD starts BIRD with BFD on its session to the node.
func (l *lab) startBIRDBFD(password string, routes []string, bfd *routerBFD) *bird {
	l.t.Helper()
	return l.startBIRDConfig(password, routes, "", bfd)
}

func (l *lab) startBIRDConfig(password string, routes []string, extra string, bfd *routerBFD) *bird {
	l.t.Helper()
	b := &bird{l: l, dir: filepath.Join(l.dir, "bird"), extra: extra, bfd: bfd}
	must(l.t, os.MkdirAll(b.dir, 0o755))
	b.sock = filepath.Join(b.dir, "bird.ctl")
	b.restart(password, routes)
	return b
}

// restart starts BIRD (again) with a new configuration.
func (b *bird) restart(password string, routes []string) {
	b.l.t.Helper()
	conf := filepath.Join(b.dir, "bird.conf")
	must(b.l.t, os.WriteFile(conf, []byte(birdConfigWith(b.dir, password, routes, b.extra, b.bfd)), 0o644))
	b.n++
	b.p = b.l.start(b.l.tor, fmt.Sprintf("bird-%d", b.n), nil, "bird", "-f", "-c", conf, "-s", b.sock, "-P", filepath.Join(b.dir, "bird.pid"))
	waitFor(b.l.t, "BIRD's control socket", 20*time.Second, func() bool {
		_, err := b.birdc("show status")
		return err == nil
	})
}

// kill stops BIRD without a BGP notification, as a crash would.
func (b *bird) kill() {
	b.l.t.Helper()
	must(b.l.t, b.p.cmd.Process.Kill())
	waitFor(b.l.t, "BIRD to exit", 10*time.Second, b.p.exited)
}

func (b *bird) birdc(args ...string) (string, error) {
	out, err := b.l.tor.Exec(context.Background(), "birdc", append([]string{"-s", b.sock}, args...)...)
	return string(out), err
}

// received lists the routes BIRD imported from the node.
func (b *bird) received(t *testing.T) []string {
	t.Helper()
	out, err := b.birdc("show", "route", "protocol", "node")
	if err != nil {
		return nil
	}
	var rs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.Contains(f[0], "/") {
			rs = append(rs, f[0])
		}
	}
	return rs
}

// frr is FRR (bgpd with zebra) acting as the ToR.
type frr struct {
	l   *lab
	dir string
}

func frrConfig(dir, password string, routes []string, b *routerBFD) string {
	var nets strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&nets, "  network %s\n", r)
	}
	var bfdNeighbor string
	if b != nil {
		// check-control-plane-failure keeps a restarting peer's routes
		// when its BFD fails with the C bit clear (RFC 5882 4.3.2).
		// update-source: without a fixed source, bgpd re-installs the BFD
		// session (a new discriminator, Down) each time the BGP session
		// comes up and learns its local address, which the node sees as
		// a BFD failure right after every establishment.
		bfdNeighbor = fmt.Sprintf(" neighbor %s bfd profile node\n neighbor %s update-source %s\n", nodeIP, nodeIP, torIP)
		if b.mode == "check-control-plane-failure" {
			bfdNeighbor += fmt.Sprintf(" neighbor %s bfd check-control-plane-failure\n", nodeIP)
		}
	}
	return fmt.Sprintf(`hostname tor
log file %s/bgpd.log informational
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 bgp graceful-restart restart-time 10
 timers bgp 3 9
 neighbor %s remote-as %d
 neighbor %s password %s
 neighbor %s timers connect 2
%s address-family ipv4 unicast
%s  neighbor %s activate
 exit-address-family
`, dir, torAS, torIP, nodeIP, nodeAS, nodeIP, password, nodeIP, bfdNeighbor, nets.String(), nodeIP)
}

func (l *lab) startFRR(password string, routes []string) *frr {
	l.t.Helper()
	return l.startFRRWith(password, routes, nil)
}

// startFRRWith starts zebra and bgpd, and bfdd when bfd is set.
func (l *lab) startFRRWith(password string, routes []string, bfd *routerBFD) *frr {
	l.t.Helper()
	f := &frr{l: l, dir: filepath.Join(l.dir, "frr")}
	must(l.t, os.MkdirAll(f.dir, 0o755))
	must(l.t, os.WriteFile(filepath.Join(f.dir, "zebra.conf"), fmt.Appendf(nil, "hostname tor\nlog file %s/zebra.log informational\n", f.dir), 0o644))
	must(l.t, os.WriteFile(filepath.Join(f.dir, "bgpd.conf"), []byte(frrConfig(f.dir, password, routes, bfd)), 0o644))
	frrOwned(l.t, f.dir)
	common := []string{"-z", filepath.Join(f.dir, "zserv.api"), "--vty_socket", f.dir, "-A", "127.0.0.1", "-P", "0"}
	l.start(l.tor, "zebra", nil, append([]string{"/usr/lib/frr/zebra", "-f", filepath.Join(f.dir, "zebra.conf"), "-i", filepath.Join(f.dir, "zebra.pid")}, common...)...)
	waitFor(l.t, "zebra's socket", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(f.dir, "zserv.api"))
		return err == nil
	})
	if bfd != nil {
		// bfdd holds the profile that bgpd names.
		ms := bfd.interval.Milliseconds()
		conf := filepath.Join(f.dir, "bfdd.conf")
		must(l.t, os.WriteFile(conf, fmt.Appendf(nil, "hostname tor\nlog file %s/bfdd.log informational\nbfd\n profile node\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier %d\n exit\nexit\n",
			f.dir, ms, ms, bfd.multiplier), 0o644))
		frrOwned(l.t, f.dir)
		l.start(l.tor, "bfdd", nil, append([]string{"/usr/lib/frr/bfdd", "-f", conf, "-i", filepath.Join(f.dir, "bfdd.pid"), "--bfdctl", filepath.Join(f.dir, "bfdd.sock")}, common...)...)
	}
	l.start(l.tor, "bgpd", nil, append([]string{"/usr/lib/frr/bgpd", "-f", filepath.Join(f.dir, "bgpd.conf"), "-i", filepath.Join(f.dir, "bgpd.pid")}, common...)...)
	waitFor(l.t, "bgpd's vty", 20*time.Second, func() bool {
		_, err := f.vtysh("show bgp summary")
		return err == nil
	})
	return f
}

func (f *frr) vtysh(cmd string) (string, error) {
	out, err := f.l.tor.Exec(context.Background(), "vtysh", "--vty_socket", f.dir, "-c", cmd)
	return string(out), err
}

// received lists the routes bgpd received from the node.
func (f *frr) received(t *testing.T) []string {
	t.Helper()
	out, err := f.vtysh("show bgp ipv4 unicast neighbors " + nodeIP + " routes")
	if err != nil {
		return nil
	}
	var rs []string
	for _, line := range strings.Split(out, "\n") {
		for _, field := range strings.Fields(line) {
			if strings.Contains(field, "/") && !strings.HasPrefix(field, "*") {
				rs = append(rs, field)
				break
			}
			if strings.HasPrefix(field, "*>") && strings.Contains(field, "/") {
				rs = append(rs, strings.TrimPrefix(field, "*>"))
				break
			}
		}
	}
	return rs
}
