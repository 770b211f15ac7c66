package ctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// peerRow is one BGP session in rhizomectl bgp peers -o json|yaml, the same
// whether it came from a node's agent or from its RhizomeNode status; the
// names are the RhizomeNode status's.
type peerRow struct {
	Node               string     `json:"node"`
	Peer               string     `json:"peer"`
	PeerAS             int64      `json:"peerAS"`
	Kind               string     `json:"kind"`
	State              string     `json:"state"`
	Since              *time.Time `json:"since,omitempty"`
	PrefixesReceived   int64      `json:"prefixesReceived"`
	PrefixesAccepted   int64      `json:"prefixesAccepted"`
	PrefixesAdvertised int64      `json:"prefixesAdvertised"`
	// PrefixesRejected counts the rejected prefixes by reason.
	PrefixesRejected map[string]int64 `json:"prefixesRejected,omitempty"`
	LastError        string           `json:"lastError,omitempty"`
	Source           string           `json:"source,omitempty"`
	// BFD is the BFD session's state, when BFD runs beside the session
	// (known from the RhizomeNode status).
	BFD string `json:"bfd,omitempty"`
	// bfdDetail is what the table shows beside the state: the negotiated
	// detection time when Up, the diagnostic otherwise.
	bfdDetail string
}

func peerRowsFromAgent(st *agentapi.StatusResponse) []peerRow {
	rows := make([]peerRow, 0, len(st.GetSessions()))
	for _, s := range st.GetSessions() {
		r := peerRow{Node: st.GetNodeName(), Peer: s.GetPeer(), PeerAS: int64(s.GetPeerAs()), Kind: s.GetKind(), State: s.GetState(),
			PrefixesReceived: s.GetPrefixesReceived(), PrefixesAccepted: s.GetPrefixesAccepted(), PrefixesAdvertised: s.GetPrefixesAdvertised(),
			LastError: s.GetLastError(), Source: s.GetSource(), BFD: s.GetBfdState(),
			PrefixesRejected: s.GetPrefixesRejected()}
		r.bfdDetail = bfdDetail(r.BFD, s.GetBfdDiagnostic(), time.Duration(s.GetBfdDetectionMs())*time.Millisecond)
		if s.GetSinceUnix() > 0 {
			t := time.Unix(s.GetSinceUnix(), 0).UTC()
			r.Since = &t
		}
		rows = append(rows, r)
	}
	sortPeers(rows)
	return rows
}

func peerRowsFromNode(n *v1alpha1.RhizomeNode) []peerRow {
	var rows []peerRow
	for _, s := range n.Status.Sessions {
		r := peerRow{Node: n.Name, Peer: s.Peer, PeerAS: s.PeerAS, Kind: string(s.Kind), State: s.State,
			PrefixesReceived: s.PrefixesReceived, PrefixesAccepted: s.PrefixesAccepted, PrefixesAdvertised: s.PrefixesAdvertised,
			LastError: s.LastError, Source: s.Source, PrefixesRejected: s.PrefixesRejected}
		if s.Since != nil {
			t := s.Since.UTC()
			r.Since = &t
		}
		if b := s.BFD; b != nil {
			r.BFD = b.State
			var det time.Duration
			if b.DetectionTime != nil {
				det = b.DetectionTime.Duration
			}
			r.bfdDetail = bfdDetail(b.State, b.Diagnostic, det)
		}
		rows = append(rows, r)
	}
	return rows
}

func sortPeers(rows []peerRow) {
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Node != rows[j].Node {
			return rows[i].Node < rows[j].Node
		}
		return rows[i].Peer < rows[j].Peer
	})
}

func (g *globals) printPeers(rows []peerRow) error {
	return g.emit(listOf(rows), func(w io.Writer, wide bool) error { return writePeerTable(w, rows, false, wide) })
}

// bfdDetail is a session's BFD column: "-" without BFD, the state with the
// negotiated detection time when Up, the state and why otherwise (an
// Unavailable BFD's reason is long: it is in -o wide's LAST ERROR and the
// RhizomeNode status).
func bfdDetail(state, diagnostic string, detection time.Duration) string {
	switch {
	case state == "":
		return "-"
	case state == "Up" && detection > 0:
		return fmt.Sprintf("Up(%dms)", detection.Milliseconds())
	case diagnostic != "" && state != "Unavailable":
		return state + "(" + diagnostic + ")"
	}
	return state
}

// writePeerTable prints sessions; withNode adds the NODE column (every
// node's sessions), wide the source and last error apart. BFD is in both:
// it is what says a session will fail over in a second or at its hold
// timer. Wide also shows the rejected prefixes by reason.
func writePeerTable(w io.Writer, rows []peerRow, withNode, wide bool) error {
	head := "PEER\tAS\tKIND\tSTATE\tSINCE\tBFD\tRECEIVED\tACCEPTED\tADVERTISED\tINFO"
	if wide {
		head = "PEER\tAS\tKIND\tSTATE\tSINCE\tBFD\tRECEIVED\tACCEPTED\tADVERTISED\tSOURCE\tREJECTED\tLAST ERROR"
	}
	if withNode {
		head = "NODE\t" + head
	}
	fmt.Fprintln(w, head)
	for _, r := range rows {
		bfdCol := r.bfdDetail
		if bfdCol == "" {
			bfdCol = orDash(r.BFD)
		}
		line := fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d", r.Peer, r.PeerAS, r.Kind, r.State, since(r.Since),
			bfdCol, r.PrefixesReceived, r.PrefixesAccepted, r.PrefixesAdvertised)
		if wide {
			line += fmt.Sprintf("\t%s\t%s\t%s", orDash(r.Source), orDash(rejected(r.PrefixesRejected)), orDash(r.LastError))
		} else {
			info := r.LastError
			if info == "" {
				info = r.Source
			}
			line += "\t" + info
		}
		if withNode {
			line = r.Node + "\t" + line
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

// rejected renders rejected prefixes by reason, e.g. "held=1,not-owner=3",
// sorted by reason.
func rejected(m map[string]int64) string {
	reasons := make([]string, 0, len(m))
	for r, n := range m {
		if n > 0 {
			reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
		}
	}
	sort.Strings(reasons)
	return strings.Join(reasons, ",")
}

func (g *globals) rhizomeNodes(ctx context.Context) ([]v1alpha1.RhizomeNode, error) {
	c, err := g.clients()
	if err != nil {
		return nil, err
	}
	l, err := c.rz.RhizomeV1alpha1().RhizomeNodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing RhizomeNodes: %w", err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items, nil
}

// clusterPeers prints every node's sessions from the RhizomeNode status,
// like cilium bgp peers.
func (g *globals) clusterPeers(ctx context.Context) error {
	nodes, err := g.rhizomeNodes(ctx)
	if err != nil {
		return err
	}
	var rows []peerRow
	for i := range nodes {
		rows = append(rows, peerRowsFromNode(&nodes[i])...)
	}
	sortPeers(rows)
	return g.emit(listOf(rows), func(w io.Writer, wide bool) error { return writePeerTable(w, rows, true, wide) })
}

// nodeRow is one node in rhizomectl nodes -o json|yaml.
type nodeRow struct {
	Name string `json:"name"`
	// Ready is the RhizomeNode's Ready condition: True, False or Unknown
	// (no condition: the agent never reported).
	Ready               string     `json:"ready"`
	Reason              string     `json:"reason,omitempty"`
	RouterID            string     `json:"routerID,omitempty"`
	ASNumber            int64      `json:"asNumber,omitempty"`
	Address             string     `json:"ipv4Address,omitempty"`
	SessionsEstablished int        `json:"sessionsEstablished"`
	Sessions            int        `json:"sessions"`
	RoutesProgrammed    int64      `json:"routesProgrammed"`
	Blocks              []string   `json:"blocks"`
	ObservedAt          *time.Time `json:"observedAt,omitempty"`
}

func nodeRowOf(n *v1alpha1.RhizomeNode) nodeRow {
	r := nodeRow{Name: n.Name, Ready: "Unknown", RouterID: n.Status.RouterID, ASNumber: n.Status.ASNumber, Address: n.Spec.IPv4Address,
		Sessions: len(n.Status.Sessions), RoutesProgrammed: n.Status.RoutesProgrammed, Blocks: n.Status.Blocks}
	if r.Blocks == nil {
		r.Blocks = []string{}
	}
	if c := meta.FindStatusCondition(n.Status.Conditions, "Ready"); c != nil {
		r.Ready = string(c.Status)
		if c.Status != metav1.ConditionTrue {
			r.Reason = c.Message
		}
	}
	for _, s := range n.Status.Sessions {
		if s.State == "Established" {
			r.SessionsEstablished++
		}
	}
	// A reflector's status lists only some of its sessions
	// (sessionsOmitted); its "established/total" summary counts them all.
	var est, total int
	if _, err := fmt.Sscanf(n.Status.SessionsEstablished, "%d/%d", &est, &total); err == nil && n.Status.SessionsOmitted > 0 {
		r.SessionsEstablished, r.Sessions = est, total
	}
	if n.Status.ObservedAt != nil {
		t := n.Status.ObservedAt.UTC()
		r.ObservedAt = &t
	}
	return r
}

// printNodes is the cluster-wide summary: one line per RhizomeNode.
func (g *globals) printNodes(ctx context.Context) error {
	nodes, err := g.rhizomeNodes(ctx)
	if err != nil {
		return err
	}
	rows := make([]nodeRow, 0, len(nodes))
	for i := range nodes {
		rows = append(rows, nodeRowOf(&nodes[i]))
	}
	return g.emit(listOf(rows), func(w io.Writer, wide bool) error {
		head := "NODE\tREADY\tROUTER ID\tAS\tSESSIONS\tROUTES\tBLOCKS"
		if wide {
			head += "\tADDRESS\tOBSERVED\tREASON"
		}
		fmt.Fprintln(w, head)
		for _, r := range rows {
			line := fmt.Sprintf("%s\t%s\t%s\t%d\t%d/%d\t%d\t%s", r.Name, r.Ready, orDash(r.RouterID), r.ASNumber,
				r.SessionsEstablished, r.Sessions, r.RoutesProgrammed, orDash(strings.Join(r.Blocks, ",")))
			if wide {
				line += fmt.Sprintf("\t%s\t%s\t%s", orDash(r.Address), since(r.ObservedAt), orDash(r.Reason))
			}
			fmt.Fprintln(w, line)
		}
		return nil
	})
}
