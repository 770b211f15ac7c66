package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// The ToR routers are real BIRD 2 or FRR daemons in the ToR namespaces.
// Each peers eBGP (its rack's AS) with the nodes of its rack and with the
// other ToRs over the spine, exports its rack subnet, and installs what it
// learns into its kernel so that it forwards between racks.

var birdConf = template.Must(template.New("bird").Parse(`# rhizome-lab ToR {{.Rack.Index}}; generated, do not edit.
log "{{.Dir}}/bird.log" all;
router id {{.Rack.SpineAddr.Addr}};

protocol device { scan time 5; }

protocol direct {
  ipv4;
  interface "br0", "spine0";
}

protocol kernel {
  ipv4 { import none; export filter { if source = RTS_BGP then accept; reject; }; };
  merge paths on;
}
{{- if .BFD}}

protocol bfd {
  interface "br0" {
    min rx interval {{.BFD.IntervalMS}} ms;
    min tx interval {{.BFD.IntervalMS}} ms;
    multiplier {{.BFD.Multiplier}};
  };
}
{{- end}}

# error wait time: BIRD waits 60-300 s by default before it peers again
# after a session error (a hold timer that ran out when a node's link was
# cut): a minute without the node's routes after the link is back.
template bgp rack_node {
  local {{.Rack.ToRAddr.Addr}} as {{.Rack.ToRAS}};
  ipv4 { import all; export all; };
  connect retry time 5;
{{- if .BFD}}
  # A BFD failure is a session error too: with BFD the session comes
  # back sooner still.
  error wait time 1, 10;
{{- else}}
  error wait time 5, 30;
{{- end}}
  hold time 9;
  keepalive time 3;
  graceful restart on;
{{- if .Password}}
  password "{{.Password}}";
{{- end}}
{{- if .BFD}}
  bfd on;
{{- end}}
}
{{range .Nodes}}
protocol bgp {{.ID}} from rack_node { neighbor {{.Addr}} as {{$.ClusterAS}}; }
{{- end}}
{{range .Peers}}
protocol bgp {{.ID}} {
  local {{$.Rack.SpineAddr.Addr}} as {{$.Rack.ToRAS}};
  neighbor {{.Addr}} as {{.AS}};
  ipv4 { import all; export all; };
  connect retry time 5;
  error wait time 5, 30;
  hold time 9;
  keepalive time 3;
}
{{- end}}
`))

var frrConf = template.Must(template.New("frr").Parse(`! rhizome-lab ToR {{.Rack.Index}}; generated, do not edit.
frr defaults datacenter
hostname tor-{{.Rack.Index}}
log file {{.Dir}}/frr.log
!
router bgp {{.Rack.ToRAS}}
 bgp router-id {{.Rack.SpineAddr.Addr}}
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 bgp bestpath as-path multipath-relax
 neighbor NODES peer-group
 neighbor NODES remote-as {{.ClusterAS}}
 neighbor NODES timers 3 9
 neighbor NODES timers connect 5
{{- if .BFD}}
 neighbor NODES bfd profile nodes
 ! A fixed source: otherwise bgpd re-installs the BFD session (Down, a new
 ! discriminator) whenever a session comes up and learns its address.
 neighbor NODES update-source {{.Rack.ToRAddr.Addr}}
{{- end}}
{{- if .Password}}
 neighbor NODES password {{.Password}}
{{- end}}
{{- range .Nodes}}
 neighbor {{.Addr}} peer-group NODES
{{- end}}
{{- range .Peers}}
 neighbor {{.Addr}} remote-as {{.AS}}
 neighbor {{.Addr}} timers 3 9
 neighbor {{.Addr}} timers connect 5
{{- end}}
 address-family ipv4 unicast
  redistribute connected
  maximum-paths 16
 exit-address-family
!
`))

type torPeer struct {
	ID   string
	Addr string
	AS   uint32
}

type torConfig struct {
	Rack      RackPlan
	Dir       string
	ClusterAS uint32
	Nodes     []torPeer
	Peers     []torPeer
	// Password is the MD5 password of the sessions with the nodes: the
	// tor overlay's example one in a kubelet lab (which installs that
	// overlay as it is), none otherwise.
	Password string
	// BFD on the sessions with the nodes (--bfd); nil: off.
	BFD *torBFD
}

type torBFD struct{ IntervalMS, Multiplier int }

func (l *Lab) torDir(rack int) string { return filepath.Join(l.Dir, "tors", strconv.Itoa(rack)) }

func (l *Lab) torConfig(r RackPlan) torConfig {
	c := torConfig{Rack: r, Dir: l.torDir(r.Index), ClusterAS: ClusterAS}
	if l.Plan.Opts.Kubelet {
		c.Password = labToRPassword
	}
	if iv, mult, err := ParseBFD(l.Plan.Opts.BFD); l.Plan.Opts.BFD != "" && err == nil {
		c.BFD = &torBFD{IntervalMS: int(iv.Milliseconds()), Multiplier: mult}
	}
	for _, name := range r.Nodes {
		n, _ := l.Plan.Node(name)
		c.Nodes = append(c.Nodes, torPeer{ID: strings.ReplaceAll(name, "-", "_"), Addr: n.Addr.Addr().String()})
	}
	for _, o := range l.Plan.Racks {
		if o.Index != r.Index {
			c.Peers = append(c.Peers, torPeer{ID: fmt.Sprintf("tor_%d", o.Index), Addr: o.SpineAddr.Addr().String(), AS: o.ToRAS})
		}
	}
	return c
}

// startToRs starts the BGP daemons of every ToR.
func (l *Lab) startToRs() error {
	if l.Plan.Opts.ToR == "none" {
		return nil
	}
	for _, r := range l.Plan.Racks {
		if err := l.startToR(r); err != nil {
			return err
		}
	}
	return nil
}

// startToR starts one rack's BGP daemons; their processes are recorded
// under the ToR's name (tor-N).
func (l *Lab) startToR(r RackPlan) error {
	dir := l.torDir(r.Index)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var err error
	switch l.Plan.Opts.ToR {
	case "bird":
		if err := l.writeBirdConf(r); err != nil {
			return err
		}
		err = l.startProc("bird", torNode(r.Index), l.torNS(r.Index), filepath.Join(dir, "bird.out"), "/usr/sbin/bird",
			"-f", "-c", filepath.Join(dir, "bird.conf"), "-s", filepath.Join(dir, "bird.ctl"))
	case "frr":
		err = l.startFRR(r, dir, l.torConfig(r))
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("starting the %s ToR of rack %d: %w", l.Plan.Opts.ToR, r.Index, err)
	}
	return nil
}

// writeBirdConf renders a BIRD ToR's configuration from the plan.
func (l *Lab) writeBirdConf(r RackPlan) error {
	var buf bytes.Buffer
	if err := birdConf.Execute(&buf, l.torConfig(r)); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.torDir(r.Index), "bird.conf"), buf.Bytes(), 0o644)
}

// StopToR stops a rack's BGP daemons (as a ToR reboot would).
func (l *Lab) StopToR(rack int) {
	l.stopProcs(func(p Proc) bool { return p.Node == torNode(rack) }, 5*time.Second)
	l.save()
}

// StartToR starts a rack's BGP daemons again.
func (l *Lab) StartToR(rack int) error {
	for _, r := range l.Plan.Racks {
		if r.Index == rack {
			return l.startToR(r)
		}
	}
	return fmt.Errorf("no rack %d", rack)
}

func torNode(rack int) string { return fmt.Sprintf("tor-%d", rack) }

// startFRR runs zebra and bgpd in the foreground. FRR writes under
// /var/tmp/frr, so each daemon gets a private /var/tmp (a bind mount in the
// mount namespace `ip netns exec` creates); its sockets live in a directory
// owned by the frr user, which the daemons switch to.
func (l *Lab) startFRR(r RackPlan, dir string, cfg torConfig) error {
	var buf bytes.Buffer
	if err := frrConf.Execute(&buf, cfg); err != nil {
		return err
	}
	run := filepath.Join(dir, "run")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{run, tmp} {
		if err := os.MkdirAll(d, 0o775); err != nil {
			return err
		}
	}
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, run, tmp} {
			os.Chown(p, uid, gid)
		}
	}
	bgpdConf := filepath.Join(dir, "bgpd.conf")
	zebraConf := filepath.Join(dir, "zebra.conf")
	if err := os.WriteFile(bgpdConf, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(zebraConf, []byte("hostname tor-"+strconv.Itoa(r.Index)+"\nlog file "+dir+"/zebra.log\n"), 0o644); err != nil {
		return err
	}
	for _, f := range []string{bgpdConf, zebraConf} {
		if u, err := user.Lookup("frr"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(f, uid, gid)
		}
	}
	common := fmt.Sprintf("--vty_socket %s -z %s/zserv.api", run, run)
	zebra := fmt.Sprintf("mount --bind %s /var/tmp && exec /usr/lib/frr/zebra %s -f %s -i %s/zebra.pid", tmp, common, zebraConf, run)
	if err := l.startProc("zebra", torNode(r.Index), l.torNS(r.Index), filepath.Join(dir, "zebra.out"), "/usr/lib/frr/zebra", "sh", "-c", zebra); err != nil {
		return err
	}
	if cfg.BFD != nil {
		// bfdd holds the profile that bgpd's peer group names.
		bfddConf := filepath.Join(dir, "bfdd.conf")
		conf := fmt.Sprintf("hostname tor-%d\nlog file %s/bfdd.log\nbfd\n profile nodes\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier %d\n exit\nexit\n",
			r.Index, dir, cfg.BFD.IntervalMS, cfg.BFD.IntervalMS, cfg.BFD.Multiplier)
		if err := os.WriteFile(bfddConf, []byte(conf), 0o644); err != nil {
			return err
		}
		if u, err := user.Lookup("frr"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(bfddConf, uid, gid)
		}
		bfdd := fmt.Sprintf("mount --bind %s /var/tmp && exec /usr/lib/frr/bfdd %s --bfdctl %s/bfdd.sock -f %s -i %s/bfdd.pid", tmp, common, run, bfddConf, run)
		if err := l.startProc("bfdd", torNode(r.Index), l.torNS(r.Index), filepath.Join(dir, "bfdd.out"), "/usr/lib/frr/bfdd", "sh", "-c", bfdd); err != nil {
			return err
		}
	}
	bgpd := fmt.Sprintf("mount --bind %s /var/tmp && exec /usr/lib/frr/bgpd %s -f %s -i %s/bgpd.pid", tmp, common, bgpdConf, run)
	return l.startProc("bgpd", torNode(r.Index), l.torNS(r.Index), filepath.Join(dir, "bgpd.out"), "/usr/lib/frr/bgpd", "sh", "-c", bgpd)
}

// torShow runs the ToR's CLI (birdc / vtysh) with a command.
func (l *Lab) torShow(rack int, command string) ([]byte, error) {
	dir := l.torDir(rack)
	switch l.State.Options.ToR {
	case "bird":
		return exec.Command("ip", append([]string{"netns", "exec", l.torNS(rack), "birdc", "-s", filepath.Join(dir, "bird.ctl")}, strings.Fields(command)...)...).CombinedOutput()
	case "frr":
		return exec.Command("ip", "netns", "exec", l.torNS(rack), "vtysh", "--vty_socket", filepath.Join(dir, "run"), "-c", command).CombinedOutput()
	}
	return nil, fmt.Errorf("the ToRs run no BGP (--tor none)")
}
