package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/routes"
)

// nodeFieldManager owns the non-BGP fields of RhizomeNode status (routes,
// blocks, devices, RoutesSynced and Ready); the BGP part has its own
// manager (bgp/reconcile.FieldManager), so neither overwrites the other.
const nodeFieldManager = "rhizome-agent-node"

// nodeStatusWriter applies the node part of the RhizomeNode status, only
// when it changed (timestamps aside).
type nodeStatusWriter struct {
	client kubecore.RhizomeNodes
	node   string
	log    *slog.Logger
	last   []byte
	since  map[string]metav1.Time // condition type → last transition
	states map[string]metav1.ConditionStatus
}

func newNodeStatusWriter(client kubecore.RhizomeNodes, node string, log *slog.Logger) *nodeStatusWriter {
	return &nodeStatusWriter{client: client, node: node, log: log.With("component", "node-status"),
		since: map[string]metav1.Time{}, states: map[string]metav1.ConditionStatus{}}
}

type nodeStatusFields struct {
	RoutesProgrammed  int64                  `json:"routesProgrammed"`
	Blocks            []string               `json:"blocks"`
	BorrowedAddresses []string               `json:"borrowedAddresses"`
	EncapDevices      []v1alpha1.EncapDevice `json:"encapDevices"`
	ObservedAt        *metav1.Time           `json:"observedAt,omitempty"`
	Conditions        []metav1.Condition     `json:"conditions"`
}

type nodeStatusApply struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]string `json:"metadata"`
	Status     nodeStatusFields  `json:"status"`
}

func (w *nodeStatusWriter) write(ctx context.Context, f nodeStatusFields) error {
	body := nodeStatusApply{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "RhizomeNode",
		Metadata: map[string]string{"name": w.node}, Status: f}
	key, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if bytes.Equal(key, w.last) {
		return nil
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range body.Status.Conditions {
		c := &body.Status.Conditions[i]
		if w.states[c.Type] != c.Status {
			w.states[c.Type], w.since[c.Type] = c.Status, now
		}
		c.LastTransitionTime = w.since[c.Type]
	}
	body.Status.ObservedAt = &now
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	force := true
	_, err = w.client.Patch(ctx, w.node, types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: nodeFieldManager, Force: &force}, "status")
	if err != nil {
		return fmt.Errorf("applying the status of RhizomeNode %s: %w", w.node, err)
	}
	w.last = key
	return nil
}

// writeStatus refreshes readiness from the components and writes the
// node's status fields.
func (a *agent) writeStatus(ctx context.Context) {
	if a.routes == nil || a.bgp == nil || a.ipam == nil || a.published.IPv4Address == "" {
		return // the RhizomeNode is created by the first pass
	}
	rs := a.routes.Status()
	a.setRoutesReadiness(rs)
	if a.events != nil {
		errs := make(map[string]string, len(rs.RouteErrors))
		for p, e := range rs.RouteErrors {
			errs[p.String()] = e
		}
		a.events.routeErrors(&a.routeErrs, errs)
		a.events.flush()
	}
	a.setBGPReadiness()
	snap := a.ipam.Snapshot()
	f := nodeStatusFields{RoutesProgrammed: int64(rs.RoutesProgrammed), Blocks: []string{}, BorrowedAddresses: []string{}, EncapDevices: []v1alpha1.EncapDevice{}}
	for _, b := range snap.Affine {
		f.Blocks = append(f.Blocks, b.CIDR.String())
	}
	for _, ad := range snap.Borrowed {
		f.BorrowedAddresses = append(f.BorrowedAddresses, ad.String())
	}
	for _, d := range rs.Devices {
		f.EncapDevices = append(f.EncapDevices, v1alpha1.EncapDevice{Name: d.Name, Type: d.Type, MTU: int32(d.MTU), Address: d.Address})
	}
	f.Conditions = []metav1.Condition{condition("RoutesSynced", a.ready.Get("routes"), "Synced", "NotSynced", fmt.Sprintf("%d routes programmed", rs.RoutesProgrammed))}
	nr := a.ready.NotReady()
	f.Conditions = append(f.Conditions, condition("Ready", strings.Join(nr, "; "), "AgentReady", "AgentNotReady", "the agent is ready"))
	if err := a.status.write(ctx, f); err != nil && ctx.Err() == nil {
		a.log.Warn("writing node status", "op", "status", "error", err)
	}
}

// setBGPReadiness sets the bgp condition: the speaker runs and has made
// its first synchronisation since the agent started (every peer sent its
// table, or the wait for them timed out), so that this node routes what
// the cluster announces before it counts as ready. Sessions that are down
// later — a node or a ToR gone — do not make the node unready: that would
// make every agent in the cluster NotReady at once and stall every rollout
// (the most common complaint about Calico's readiness). They show in the
// BGPReady condition (bgp/reconcile's StatusWriter) and the
// rhizome_bgp_session_* metrics instead.
//
// It runs on the agent's loop, so it reads BGP's Readiness, which never
// waits for the speaker: asking GoBGP here held the loop, and every pass,
// for the ~100 s a 5,000-client reflector took to converge (design 0018).
func (a *agent) setBGPReadiness() {
	bs := a.bgp.Readiness()
	err := bs.Err
	switch {
	case err != nil:
		a.ready.Set("bgp", err.Error())
	case !bs.Running:
		a.ready.Set("bgp", "not started")
		return
	case !bs.Converged:
		a.ready.Set("bgp", "first synchronisation: waiting for the peers' End-of-RIB")
	default:
		a.ready.Set("bgp", "")
	}
	if err == nil && a.events != nil {
		a.events.routesRejected(&a.rejected, bs.Sessions)
	}
}

// setRoutesReadiness sets the routes condition: a desired state the route
// programmer refused (it keeps the previous one) until a pass gives it one
// it accepts, else its first pass and its last pass's error.
func (a *agent) setRoutesReadiness(rs routes.Status) {
	switch {
	case a.routesRefused != "":
		a.ready.Set("routes", a.routesRefused)
	case rs.Passes == 0:
		a.ready.Set("routes", "no pass yet")
	case rs.LastError != "":
		a.ready.Set("routes", rs.LastError)
	default:
		a.ready.Set("routes", "")
	}
}

func condition(typ, notReady, okReason, badReason, okMessage string) metav1.Condition {
	if notReady == "" {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: okReason, Message: okMessage}
	}
	if len(notReady) > 1000 {
		notReady = notReady[:997] + "..."
	}
	return metav1.Condition{Type: typ, Status: metav1.ConditionFalse, Reason: badReason, Message: notReady}
}
