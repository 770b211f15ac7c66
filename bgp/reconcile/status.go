package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// StateNotStarted is the state of a session the agent did not configure.
const StateNotStarted = "NotStarted"

// Status is a snapshot of the node's BGP state, shaped for the
// RhizomeNode status.
type Status struct {
	RouterID netip.Addr
	ASN      uint32
	// Sessions are sorted by peer.
	Sessions []v1alpha1.BGPSessionStatus
	// Established counts the sessions in state Established; Total all
	// desired sessions, those not started included.
	Established, Total int
	// Converged: every peer has sent its table (or the wait timed out).
	Converged bool
	// Rejected counts held prefixes the import policy rejected, by reason.
	Rejected map[string]int
	// Problems are configuration errors that belong to no session.
	Problems []string
	// APIError says why GoBGP's API is not served, if it should be.
	APIError string
	// Running is false before the first successful Reconcile.
	Running bool
}

// SessionsEstablished renders "established/total".
func (s Status) SessionsEstablished() string { return fmt.Sprintf("%d/%d", s.Established, s.Total) }

// statusCache keeps the last snapshot for a short while: metrics scrapes
// and the status writer both ask, and the speaker counts advertised routes
// by walking its tables.
type statusCache struct {
	r *Reconciler
	// busy is held (a token in it) while a snapshot is taken: a channel
	// rather than a mutex so that a caller's context bounds its wait.
	busy chan struct{}
	// at is when the last successful snapshot (shown) was taken.
	at time.Time
	// md5Base holds the MD5 counters from when no password session was
	// down (or from the first look): drops beyond them are recent.
	md5Base MD5Stats
	md5Seen bool
	// shown is the outcome of the last compute, under its own lock so
	// that Readiness reads it while a compute waits for the speaker.
	shown readinessSnapshot
}

// statusMaxAge bounds how stale a cached snapshot may be.
const statusMaxAge = time.Second

// Status returns a snapshot of every session's state.
func (r *Reconciler) Status(ctx context.Context) (Status, error) {
	return r.status.get(ctx, false)
}

func (c *statusCache) get(ctx context.Context, allowCached bool) (Status, error) {
	select {
	case c.busy <- struct{}{}:
	default:
		// Another caller is taking a snapshot, which may wait for the
		// speaker: GoBGP answers from its server loop, busy for minutes
		// while a reflector converges thousands of clients. A scrape
		// takes the last snapshot rather than queue behind it (its
		// Prometheus scrape timed out at 30 s, design 0018).
		if st, ok := c.shown.status(); allowCached && ok {
			return st, nil
		}
		select {
		case c.busy <- struct{}{}:
		case <-ctx.Done():
			return Status{}, fmt.Errorf("waiting for the BGP status snapshot being taken: %w", ctx.Err())
		}
	}
	defer func() { <-c.busy }()
	if st, ok := c.shown.status(); allowCached && ok && time.Since(c.at) < statusMaxAge {
		return st, nil
	}
	st, err := c.compute(ctx)
	c.shown.record(st, err)
	if err != nil {
		return st, err
	}
	c.at = time.Now()
	return st, nil
}

func (c *statusCache) compute(ctx context.Context) (Status, error) {
	r := c.r
	r.mu.Lock()
	sp, d, computed := r.sp, r.desired, r.computed
	errs := make(map[netip.Addr]string, len(r.errs))
	for k, v := range r.errs {
		errs[k] = v
	}
	st := Status{Problems: slices.Clone(r.problems), Running: sp != nil}
	bfdErrs := maps.Clone(r.bfdErrs)
	nAds := len(r.ads)
	r.mu.Unlock()
	var bfds map[netip.Addr]bfd.Status
	if r.cfg.BFD != nil {
		l := r.cfg.BFD.Sessions()
		bfds = make(map[netip.Addr]bfd.Status, len(l))
		for _, b := range l {
			bfds[b.Peer.Remote] = b
		}
	}
	if !computed {
		return st, nil
	}
	st.RouterID, st.ASN = d.Global.RouterID, d.Config.ASN
	peers := map[netip.Addr]bgp.PeerStatus{}
	if sp != nil {
		l, err := sp.Peers(ctx, r.countAdvertised(d.Sessions, nAds))
		if err != nil {
			return st, fmt.Errorf("reading BGP session state: %w", err)
		}
		for _, p := range l {
			peers[p.Address] = p
		}
		if g, ok := sp.(interface{ APIError() error }); ok {
			if err := g.APIError(); err != nil {
				st.APIError = err.Error()
			}
		}
	}
	counters := r.rib.Counters()
	st.Converged = r.rib.Converged()
	st.Rejected = map[string]int{}
	md5Hint := c.md5Hint(d.Sessions, peers)
	for _, s := range d.Sessions {
		ss := v1alpha1.BGPSessionStatus{
			Peer:   topology.PeerKey(s.Peer),
			PeerAS: int64(s.Peer.ASN),
			Kind:   s.Kind,
			Source: s.Source,
		}
		st.Total++
		switch ps, ok := peers[s.Peer.Address]; {
		case s.NotStarted != "":
			ss.State, ss.LastError = StateNotStarted, s.NotStarted
		case errs[s.Peer.Address] != "":
			ss.State, ss.LastError = StateNotStarted, errs[s.Peer.Address]
		case !ok:
			ss.State = bgp.StateUnknown.String()
		default:
			ss.State = ps.State.String()
			if !ps.Since.IsZero() {
				t := metav1.NewTime(ps.Since.Truncate(time.Second))
				ss.Since = &t
			}
			ss.PrefixesAdvertised = int64(ps.Advertised)
			ss.LastError = ps.LastError
			if ps.State == bgp.StateEstablished {
				st.Established++
			} else {
				ss.LastError = explainDown(s, ps, md5Hint)
			}
		}
		ss.BFD = bfdStatus(s, bfds, bfdErrs, r.bfdUnavailable())
		if cnt, ok := counters[s.Peer.Address]; ok {
			ss.PrefixesReceived, ss.PrefixesAccepted = int64(cnt.Received), int64(cnt.Accepted)
			for reason, n := range cnt.Rejected {
				if n > 0 {
					name := policy.Reason(reason).String()
					st.Rejected[name] += n
					if ss.PrefixesRejected == nil {
						ss.PrefixesRejected = map[string]int64{}
					}
					ss.PrefixesRejected[name] = int64(n)
				}
			}
		}
		st.Sessions = append(st.Sessions, ss)
	}
	return st, nil
}

// advertisedBudget bounds what counting advertised prefixes may cost the
// speaker per status snapshot, in routes evaluated: GoBGP keeps no
// Adj-RIB-Out and walks its whole table through the export policy for
// each session counted, in its server loop, which then handles nothing
// else. A reflector of 5,000 clients would evaluate 26 million routes per
// snapshot, every status interval (docs/design/0018).
const advertisedBudget = 100_000

// countAdvertised chooses the sessions whose advertised prefixes a
// snapshot counts: all of them while that stays within advertisedBudget,
// else the external ones if they fit, else none. Sessions not counted
// report 0 (the status field is then left out).
func (r *Reconciler) countAdvertised(sessions []topology.Session, ads int) func(netip.Addr) bool {
	routes := r.rib.Size() + ads
	if len(sessions)*routes <= advertisedBudget {
		return func(netip.Addr) bool { return true }
	}
	ext := map[netip.Addr]bool{}
	for _, s := range sessions {
		if s.Kind == v1alpha1.SessionExternal {
			ext[s.Peer.Address] = true
		}
	}
	if len(ext) == 0 || len(ext)*routes > advertisedBudget {
		return nil
	}
	return func(a netip.Addr) bool { return ext[a] }
}

// explainDown says why a configured session is not established.
func explainDown(s topology.Session, ps bgp.PeerStatus, md5Hint string) string {
	var parts []string
	if s.Peer.Password != "" && md5Hint != "" {
		parts = append(parts, md5Hint)
	}
	if ps.AdminDown && ps.LastError == "" {
		parts = append(parts, "shut down by the speaker")
	}
	if ps.LastError != "" {
		if len(parts) > 0 {
			parts = append(parts, "before that: "+ps.LastError)
		} else {
			parts = append(parts, ps.LastError)
		}
	}
	if s.Peer.Password != "" && md5Hint == "" {
		if ps.LastError == "" {
			parts = append(parts, "no BGP connection yet; a TCP MD5 password is set, and a password mismatch looks like this (the peer's kernel drops our packets silently)")
		}
	}
	if len(parts) == 0 {
		if s.Peer.Passive {
			return "waiting for the peer to connect"
		}
		return "no BGP connection yet"
	}
	return strings.Join(parts, "; ")
}

// MD5Stats are the kernel's TCP MD5 counters (RFC 2385 signatures).
type MD5Stats struct {
	// Failure counts segments whose signature did not verify (wrong
	// password); NotFound segments without a signature where one was
	// expected; Unexpected segments signed where none was expected.
	Failure, NotFound, Unexpected uint64
}

// md5Hint explains password sessions that are down when the kernel has
// been dropping segments for failing the MD5 check.
func (c *statusCache) md5Hint(sessions []topology.Session, peers map[netip.Addr]bgp.PeerStatus) string {
	down, up := false, false
	for _, s := range sessions {
		if s.Peer.Password == "" || s.NotStarted != "" {
			continue
		}
		if peers[s.Peer.Address].State == bgp.StateEstablished {
			up = true
		} else {
			down = true
		}
	}
	if !down && !up {
		return ""
	}
	stats, err := c.r.cfg.TCPStats()
	if err != nil {
		return ""
	}
	if !c.md5Seen || !down {
		c.md5Base, c.md5Seen = stats, true
	}
	if !down {
		return ""
	}
	if stats.Failure > c.md5Base.Failure {
		return fmt.Sprintf("TCP MD5 password mismatch: this node's kernel dropped %d segments from a password-protected peer that failed the signature check (TcpExtTCPMD5Failure); check the password on both sides", stats.Failure-c.md5Base.Failure)
	}
	if stats.NotFound > c.md5Base.NotFound {
		return fmt.Sprintf("this node's kernel dropped %d segments without a TCP MD5 signature (TcpExtTCPMD5NotFound): is the password set on the peer?", stats.NotFound-c.md5Base.NotFound)
	}
	return ""
}

// ReadMD5Stats reads the TCP MD5 counters of the calling process's network
// namespace from /proc/net/netstat.
func ReadMD5Stats() (MD5Stats, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return MD5Stats{}, err
	}
	return ParseMD5Stats(b)
}

// ParseMD5Stats parses /proc/net/netstat: pairs of "TcpExt:" lines, names
// then values.
func ParseMD5Stats(b []byte) (MD5Stats, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		var s MD5Stats
		for i, v := range f[1:] {
			if i >= len(names) {
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return MD5Stats{}, fmt.Errorf("/proc/net/netstat: %s: %w", names[i], err)
			}
			switch names[i] {
			case "TCPMD5Failure":
				s.Failure = n
			case "TCPMD5NotFound":
				s.NotFound = n
			case "TCPMD5Unexpected":
				s.Unexpected = n
			}
		}
		return s, nil
	}
	return MD5Stats{}, fmt.Errorf("/proc/net/netstat: no TcpExt counters")
}
