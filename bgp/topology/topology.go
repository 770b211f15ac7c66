// Package topology decides which BGP sessions a node has: one pure function
// from the cluster's state (this node, all Nodes, BGPConfigurations,
// BGPPeers and the Secrets they name) to the desired sessions, with every
// parameter resolved into bgp.Peer values the speaker can apply.
//
// The rules, Calico's where the concept is the same:
//   - Full mesh: iBGP (or eBGP, if their AS differ) between every two nodes
//     whose merged configuration has nodeToNodeMesh on, per address family
//     both nodes have.
//   - Route reflectors: a node whose own BGPConfiguration sets
//     routeReflectorClusterID reflects. A BGPPeer with peerSelector makes
//     every node it applies to (node/nodeSelector, or all) peer with every
//     node peerSelector chooses; both ends derive the same session. On a
//     reflector, a peer that is not itself a reflector is its client.
//   - External peers: a BGPPeer with peerIP applies to the nodes chosen by
//     node or nodeSelector (all nodes without either). An explicit BGPPeer
//     wins over a mesh session to the same address.
//   - Of two node-to-node ends, the one with the higher address waits for
//     the other to connect: two GoBGP speakers dialling each other can keep
//     rejecting each other's connections from Idle for a long time.
//
// Bad input never stops the whole: a session that cannot start (a missing
// Secret, an invalid filter) is listed with NotStarted saying why, and
// problems that belong to no session are listed in Desired.Problems.
package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/nodeaddr"
)

// SecretFunc returns the value of a key of a Secret in the agent's
// namespace. An error (including not found) keeps the session from
// starting, with the error as the reason.
type SecretFunc func(name, key string) (string, error)

// Input is the cluster state the sessions depend on.
type Input struct {
	// NodeName is this node.
	NodeName string
	// NodeIPv4 and NodeIPv6 override this node's addresses (the agent's
	// detection); zero values come from the node's RhizomeNode or Node.
	NodeIPv4, NodeIPv6 netip.Addr
	// RouterID overrides the router ID (default: the node's IPv4 address).
	RouterID netip.Addr
	Nodes    []*corev1.Node
	// RhizomeNodes carry the addresses agents detected and published; they
	// win over a Node's InternalIPs. Optional.
	RhizomeNodes []*v1alpha1.RhizomeNode
	Configs      []*v1alpha1.BGPConfiguration
	Peers        []*v1alpha1.BGPPeer
	Secret       SecretFunc
}

// Session is one desired session.
type Session struct {
	// Peer is the speaker configuration (Password filled in).
	Peer bgp.Peer
	Kind v1alpha1.SessionKind
	// Source names where the session comes from: the BGPPeer(s), or the
	// peer node for the mesh.
	Source string
	// Node is the peer node's name for mesh and rr sessions.
	Node string
	// Reflector: the peer node is a route reflector in our AS, so it
	// passes on other nodes' routes to us (whatever the session's kind).
	Reflector bool
	// Import and Export are the BGPPeer's filters.
	Import, Export []policy.Rule
	// BFD, if set, runs a BFD session with these timers beside the BGP
	// session.
	BFD *bfd.Timers
	// NotStarted, if set, says why the session is not configured.
	NotStarted string
	// MaxPrefixFromPeer: the BGPPeer sets the prefix limit (maxPrefix), so
	// the default of sessions between nodes does not apply.
	MaxPrefixFromPeer bool
}

// Desired is the outcome for this node.
type Desired struct {
	Global bgp.Global
	Config Config
	// NodeIPv4 and NodeIPv6 are this node's addresses.
	NodeIPv4, NodeIPv6 netip.Addr
	// Sessions are sorted by peer address.
	Sessions []Session
	// Problems are configuration errors that belong to no single session.
	Problems []string
	// Nodes are every node's addresses and router ID, for the import
	// policy: what our nodes send is only accepted through the address of
	// the node that originated it.
	Nodes *policy.Nodes
}

// RouteReflector reports whether this node reflects routes.
func (d *Desired) RouteReflector() bool { return d.Config.ClusterID.IsValid() }

// nodeInfo is what the computation knows about one node.
type nodeInfo struct {
	name   string
	labels labels.Set
	v4, v6 netip.Addr
	cfg    Config
}

func (n *nodeInfo) addr(f bgp.Family) netip.Addr {
	if f == bgp.IPv6 {
		return n.v6
	}
	return n.v4
}

// Internal defaults for node-to-node sessions.
const (
	// NodeConnectRetry is the retry interval of node-to-node sessions:
	// a node that comes back should not wait GoBGP's 120s (or even 30s).
	NodeConnectRetry = 5 * time.Second
)

// Compute returns this node's desired BGP state. It fails only when the
// node cannot run BGP at all: its Node is unknown or it has no IPv4
// address for a router ID.
func Compute(in Input) (Desired, error) {
	var d Desired
	cfgs := map[string]*v1alpha1.BGPConfigurationSpec{}
	for _, c := range in.Configs {
		cfgs[c.Name] = &c.Spec
	}
	published := map[string]*v1alpha1.RhizomeNode{}
	for _, r := range in.RhizomeNodes {
		published[r.Name] = r
	}
	nodes := make([]*nodeInfo, 0, len(in.Nodes))
	var self *nodeInfo
	for _, n := range in.Nodes {
		ni := &nodeInfo{name: n.Name, labels: labels.Set(n.Labels)}
		ni.v4, ni.v6 = nodeaddr.Of(n, published[n.Name])
		var probs []string
		ni.cfg, probs = MergeConfig(cfgs[v1alpha1.DefaultBGPConfigurationName], cfgs[v1alpha1.NodeBGPConfigurationPrefix+n.Name])
		if n.Name == in.NodeName {
			self = ni
			if in.NodeIPv4.IsValid() {
				ni.v4 = in.NodeIPv4
			}
			if in.NodeIPv6.IsValid() {
				ni.v6 = in.NodeIPv6
			}
			d.Problems = append(d.Problems, probs...)
		}
		nodes = append(nodes, ni)
	}
	if self == nil {
		return d, fmt.Errorf("node %s is not among the cluster's Nodes", in.NodeName)
	}
	slices.SortFunc(nodes, func(a, b *nodeInfo) int { return strings.Compare(a.name, b.name) })
	d.Config, d.NodeIPv4, d.NodeIPv6 = self.cfg, self.v4, self.v6
	rid := in.RouterID
	if !rid.IsValid() {
		rid = self.v4
	}
	d.Nodes = nodeTable(nodes, published, self, rid)
	if !rid.Is4() {
		return d, fmt.Errorf("node %s has no IPv4 address to use as BGP router ID: set one (--router-id)", in.NodeName)
	}
	port := self.cfg.ListenPort
	d.Global = bgp.Global{ASN: self.cfg.ASN, RouterID: rid, ListenPort: port}

	c := computer{in: in, self: self, nodes: nodes, sessions: map[netip.Addr]*Session{}}
	c.mesh()
	c.reflectors()
	c.external()
	d.Problems = append(d.Problems, c.problems...)
	for _, s := range c.sessions {
		d.Sessions = append(d.Sessions, *s)
	}
	slices.SortFunc(d.Sessions, func(a, b Session) int { return a.Peer.Address.Compare(b.Peer.Address) })
	return d, nil
}

type computer struct {
	in       Input
	self     *nodeInfo
	nodes    []*nodeInfo
	sessions map[netip.Addr]*Session
	problems []string
}

func (c *computer) mesh() {
	if !c.self.cfg.Mesh {
		return
	}
	for _, n := range c.nodes {
		if n == c.self || !n.cfg.Mesh {
			continue
		}
		for _, f := range []bgp.Family{bgp.IPv4, bgp.IPv6} {
			if s := c.nodeSession(n, f, v1alpha1.SessionMesh, n.name, nil); s != nil {
				c.sessions[s.Peer.Address] = s
			}
		}
	}
}

// nodeSession builds a session from this node to node n in family f, or
// nil if either has no address of the family.
func (c *computer) nodeSession(n *nodeInfo, f bgp.Family, kind v1alpha1.SessionKind, source string, bp *v1alpha1.BGPPeer) *Session {
	local, remote := c.self.addr(f), n.addr(f)
	if !local.IsValid() || !remote.IsValid() || local == remote {
		return nil
	}
	cfg := c.self.cfg
	p := bgp.Peer{
		Address:         remote,
		ASN:             n.cfg.ASN,
		LocalASN:        cfg.ASN,
		Description:     fmt.Sprintf("rhizome %s node %s", kind, n.name),
		LocalAddress:    local,
		Passive:         local.Compare(remote) > 0,
		Timers:          bgp.Timers{Keepalive: cfg.Keepalive, Hold: cfg.Hold, ConnectRetry: NodeConnectRetry},
		GracefulRestart: cfg.GracefulRestart,
	}
	if n.cfg.ListenPort != bgp179 {
		p.Port = uint16(n.cfg.ListenPort)
	}
	// A reflector's clients are the nodes that do not reflect themselves.
	if cfg.ClusterID.IsValid() && !n.cfg.ClusterID.IsValid() && cfg.ASN == n.cfg.ASN {
		p.RouteReflectorClient, p.RouteReflectorClusterID = true, cfg.ClusterID
	}
	s := &Session{Peer: p, Kind: kind, Source: source, Node: n.name,
		Reflector: n.cfg.ClusterID.IsValid() && n.cfg.ASN == cfg.ASN}
	// Mesh BFD when both ends have it on, like the mesh itself: a session
	// whose other end never answers would only sit Down.
	if kind == v1alpha1.SessionMesh && cfg.MeshBFD.Enabled && n.cfg.MeshBFD.Enabled {
		t := cfg.MeshBFD.Timers
		s.BFD = &t
	}
	// TTL security between nodes: on the mesh and on reflector sessions
	// alike (a mesh turned into reflector sessions must not lose it); a
	// BGPPeer's own ttlSecurity or ebgpMultihop wins (applyPeerSpec).
	s.Peer.TTLSecurityHops = cfg.MeshTTLSecurity
	// The mesh password. Fail closed: without the Secret's value the
	// session is not opened, never opened without the password.
	if kind == v1alpha1.SessionMesh && cfg.MeshPassword != nil {
		if err := c.password(s, cfg.MeshPassword); err != nil {
			s.NotStarted = "nodeMeshPassword: " + err.Error()
		}
	}
	if bp != nil {
		c.applyPeerSpec(s, bp)
	}
	return s
}

const bgp179 = 179

func (c *computer) selects(sel *metav1.LabelSelector, n *nodeInfo, what string, bp *v1alpha1.BGPPeer) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.problem(fmt.Sprintf("BGPPeer %s: %s: %v; ignored", bp.Name, what, err))
		return false
	}
	return s.Matches(n.labels)
}

func (c *computer) problem(p string) {
	if !slices.Contains(c.problems, p) {
		c.problems = append(c.problems, p)
	}
}

// opens reports whether the BGPPeer applies to node n (node, nodeSelector,
// or every node without either).
func (c *computer) opens(bp *v1alpha1.BGPPeer, n *nodeInfo) bool {
	switch {
	case bp.Spec.Node != "":
		return bp.Spec.Node == n.name
	case bp.Spec.NodeSelector != nil:
		return c.selects(bp.Spec.NodeSelector, n, "nodeSelector", bp)
	}
	return true
}

func (c *computer) sortedPeers() []*v1alpha1.BGPPeer {
	l := slices.Clone(c.in.Peers)
	slices.SortFunc(l, func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	return l
}

func (c *computer) reflectors() {
	for _, bp := range c.sortedPeers() {
		if bp.Spec.PeerSelector == nil {
			continue
		}
		selfOpens := c.opens(bp, c.self)
		selfSelected := c.selects(bp.Spec.PeerSelector, c.self, "peerSelector", bp)
		for _, n := range c.nodes {
			if n == c.self {
				continue
			}
			if !(selfOpens && c.selects(bp.Spec.PeerSelector, n, "peerSelector", bp)) && !(selfSelected && c.opens(bp, n)) {
				continue
			}
			for _, f := range []bgp.Family{bgp.IPv4, bgp.IPv6} {
				s := c.nodeSession(n, f, v1alpha1.SessionRR, bp.Name, bp)
				if s == nil {
					continue
				}
				old := c.sessions[s.Peer.Address]
				switch {
				case old == nil || old.Kind == v1alpha1.SessionMesh:
					c.sessions[s.Peer.Address] = s
				case old.Kind == v1alpha1.SessionRR && !slices.Contains(strings.Split(old.Source, ","), bp.Name):
					// Two BGPPeers select the same pair: the first by name
					// sets the parameters; both are named as the source.
					old.Source += "," + bp.Name
				}
			}
		}
	}
}

func (c *computer) external() {
	for _, bp := range c.sortedPeers() {
		if bp.Spec.PeerIP == "" || !c.opens(bp, c.self) {
			continue
		}
		ap, err := parsePeerIP(bp.Spec.PeerIP)
		if err != nil {
			c.problem(fmt.Sprintf("BGPPeer %s: %v; ignored", bp.Name, err))
			continue
		}
		addr := ap.Addr()
		if addr == c.self.v4 || addr == c.self.v6 {
			continue // a BGPPeer that names this node itself
		}
		if old := c.sessions[addr]; old != nil && old.Kind == v1alpha1.SessionExternal {
			c.problem(fmt.Sprintf("BGPPeer %s: the session to %s is already configured by BGPPeer %s; ignored", bp.Name, addr, old.Source))
			continue
		}
		cfg := c.self.cfg
		asn := uint32(0)
		if bp.Spec.ASNumber != nil {
			asn = uint32(*bp.Spec.ASNumber)
		}
		p := bgp.Peer{
			Address:         addr,
			Port:            ap.Port(),
			ASN:             asn,
			LocalASN:        cfg.ASN,
			Description:     "rhizome bgppeer " + bp.Name,
			Timers:          bgp.Timers{Keepalive: cfg.Keepalive, Hold: cfg.Hold},
			GracefulRestart: cfg.GracefulRestart,
		}
		if p.Port == bgp179 {
			p.Port = 0
		}
		if bp.Spec.SourceAddress != v1alpha1.SourceAddressNone {
			p.LocalAddress = c.self.addr(bgp.FamilyOf(addr))
		}
		s := &Session{Peer: p, Kind: v1alpha1.SessionExternal, Source: bp.Name}
		if node := c.nodeByAddr(addr); node != "" {
			s.Node = node
		}
		c.applyPeerSpec(s, bp)
		c.sessions[addr] = s
	}
}

// nodeTable indexes every node's addresses and router ID. A node's router
// ID is what its agent published in its RhizomeNode status (it may be set
// with --router-id), else its IPv4 address, the default; this node's is
// the one it runs with.
func nodeTable(nodes []*nodeInfo, published map[string]*v1alpha1.RhizomeNode, self *nodeInfo, selfRID netip.Addr) *policy.Nodes {
	l := make([]policy.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		ni := policy.NodeInfo{Name: n.name, RouterID: n.v4}
		for _, a := range []netip.Addr{n.v4, n.v6} {
			if a.IsValid() {
				ni.Addresses = append(ni.Addresses, a)
			}
		}
		if rz := published[n.name]; rz != nil {
			if a, err := netip.ParseAddr(rz.Status.RouterID); err == nil && a.Is4() {
				ni.RouterID = a
			}
		}
		if n == self {
			ni.RouterID = selfRID
		}
		l = append(l, ni)
	}
	return policy.NewNodes(l)
}

func (c *computer) nodeByAddr(a netip.Addr) string {
	for _, n := range c.nodes {
		if n.v4 == a || n.v6 == a {
			return n.name
		}
	}
	return ""
}

// applyPeerSpec applies a BGPPeer's session settings.
func (c *computer) applyPeerSpec(s *Session, bp *v1alpha1.BGPPeer) {
	spec := &bp.Spec
	p := &s.Peer
	if spec.EBGPMultihop != nil {
		p.EBGPMultihop = uint8(*spec.EBGPMultihop)
		p.TTLSecurityHops = 0 // nodeMeshTTLSecurity gives way to it
	}
	if spec.TTLSecurity != nil {
		p.TTLSecurityHops = uint8(*spec.TTLSecurity)
	}
	if spec.PeerIP != "" {
		p.Passive = spec.Passive
	} else if spec.Passive {
		p.Passive = true
	}
	if spec.KeepaliveTime != nil {
		p.Timers.Keepalive = spec.KeepaliveTime.Duration
	}
	if spec.HoldTime != nil {
		p.Timers.Hold = holdTime(spec.HoldTime)
	}
	if spec.ConnectRetryTime != nil {
		p.Timers.ConnectRetry = spec.ConnectRetryTime.Duration
	}
	if spec.MaxPrefix != nil {
		p.MaxPrefixes = uint32(*spec.MaxPrefix)
		s.MaxPrefixFromPeer = true
	}
	p.GracefulRestart = mergeGR(p.GracefulRestart, spec.GracefulRestart)
	if spec.BFD != nil {
		b, probs := mergeBFD(DefaultBFD, spec.BFD, "BGPPeer "+bp.Name)
		for _, pr := range probs {
			c.problem(pr)
		}
		s.BFD = nil
		switch {
		case b.Enabled && p.EBGPMultihop > 1:
			// Packets from a peer routers away never arrive with TTL 255:
			// the session would sit Down (multi-hop BFD, RFC 5883, is not
			// implemented).
			c.problem(fmt.Sprintf("BGPPeer %s: BFD is single-hop only and the peer is %d hops away (ebgpMultihop); BFD not started", bp.Name, p.EBGPMultihop))
		case b.Enabled:
			s.BFD = &b.Timers
		}
	}
	var errs []error
	var err error
	if s.Import, err = policy.FromFilters(spec.ImportFilters); err != nil {
		errs = append(errs, fmt.Errorf("importFilters: %w", err))
	}
	if s.Export, err = policy.FromFilters(spec.ExportFilters); err != nil {
		errs = append(errs, fmt.Errorf("exportFilters: %w", err))
	}
	if spec.Password != nil {
		errs = append(errs, c.password(s, spec.Password))
	}
	if err := p.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.NotStarted = fmt.Sprintf("BGPPeer %s: %v", bp.Name, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
}

func (c *computer) password(s *Session, pw *v1alpha1.BGPPassword) error {
	ref := pw.SecretKeyRef
	if ref == nil || ref.Name == "" || ref.Key == "" {
		return errors.New("password: secretKeyRef needs a name and a key")
	}
	if c.in.Secret == nil {
		return fmt.Errorf("password: Secret %s cannot be read", ref.Name)
	}
	v, err := c.in.Secret(ref.Name, ref.Key)
	if err != nil {
		return fmt.Errorf("password: Secret %s key %s: %w", ref.Name, ref.Key, err)
	}
	if v == "" {
		return fmt.Errorf("password: Secret %s key %s is empty", ref.Name, ref.Key)
	}
	s.Peer.Password = v
	return nil
}

// parsePeerIP parses 10.0.0.1, 10.0.0.1:1179, fd00::1 or [fd00::1]:1179.
func parsePeerIP(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 0), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("peerIP %q is not an address or address:port", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("peerIP %q: port 0", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// PeerKey renders a session's peer as status shows it: the address, with
// the port if it is not 179.
func PeerKey(p bgp.Peer) string {
	if p.Port == 0 || p.Port == bgp179 {
		return p.Address.String()
	}
	return netip.AddrPortFrom(p.Address, p.Port).String()
}
