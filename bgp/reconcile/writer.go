package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// FieldManager is the server-side-apply field manager of the BGP part of
// a RhizomeNode's status. It owns routerID, asNumber, sessionsEstablished,
// sessions, sessionsOmitted and the BGPReady condition, and nothing else, so the agent's
// other writers keep their own fields without conflicts.
const FieldManager = "rhizome-agent-bgp"

// ConditionBGPReady is the RhizomeNode condition the writer maintains.
const ConditionBGPReady = "BGPReady"

// StatusWriter writes the BGP status into this node's RhizomeNode, at most
// once per interval and only when it changed.
type StatusWriter struct {
	client   kubecore.Rhizome
	node     string
	interval time.Duration
	log      *slog.Logger

	last       []byte // the last body written, with timestamps left out
	ready      metav1.ConditionStatus
	readySince metav1.Time
	writes     int
}

// NewStatusWriter returns a writer for node's RhizomeNode; interval
// defaults to 2s.
func NewStatusWriter(client kubecore.Rhizome, node string, interval time.Duration, log *slog.Logger) *StatusWriter {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &StatusWriter{client: client, node: node, interval: interval, log: log.With("component", "bgp-status")}
}

// Run writes the reconciler's status until ctx ends.
func (w *StatusWriter) Run(ctx context.Context, r *Reconciler) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		st, err := r.Status(ctx)
		if err == nil && st.Running {
			err = w.Write(ctx, st)
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("writing BGP status", "op", "status", "node", w.node, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Writes returns how many writes reached the API server.
func (w *StatusWriter) Writes() int { return w.writes }

// applyStatus is the server-side-apply body: only the fields we own.
type applyStatus struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   applyMeta   `json:"metadata"`
	Status     applyFields `json:"status"`
}

type applyMeta struct {
	Name string `json:"name"`
}

type applyFields struct {
	RouterID            string                      `json:"routerID,omitempty"`
	ASNumber            int64                       `json:"asNumber,omitempty"`
	SessionsEstablished string                      `json:"sessionsEstablished"`
	Sessions            []v1alpha1.BGPSessionStatus `json:"sessions"`
	SessionsOmitted     int64                       `json:"sessionsOmitted,omitempty"`
	Conditions          []metav1.Condition          `json:"conditions"`
}

// StatusSessionLimit bounds the sessions a RhizomeNode's status lists. A
// reflector of 5,000 clients would write ~1 MB of sessions, twice that
// with server-side apply's field bookkeeping: more than etcd stores (1.5
// MiB), and a costly write for the API server every status interval
// while sessions change.
const StatusSessionLimit = 100

// boundSessions returns at most limit sessions, those not established
// first, each part in peer order, and how many were left out.
func boundSessions(all []v1alpha1.BGPSessionStatus, limit int) ([]v1alpha1.BGPSessionStatus, int) {
	if len(all) <= limit {
		return all, 0
	}
	out := make([]v1alpha1.BGPSessionStatus, 0, limit)
	for _, established := range []bool{false, true} {
		for _, s := range all {
			if len(out) == limit {
				break
			}
			if (s.State == bgp.StateEstablished.String()) == established {
				out = append(out, s)
			}
		}
	}
	return out, len(all) - len(out)
}

// Write applies st to the RhizomeNode if it differs from the last write.
func (w *StatusWriter) Write(ctx context.Context, st Status) error {
	cond := readyCondition(st)
	body := applyStatus{
		APIVersion: v1alpha1.SchemeGroupVersion.String(),
		Kind:       "RhizomeNode",
		Metadata:   applyMeta{Name: w.node},
		Status: applyFields{
			SessionsEstablished: st.SessionsEstablished(),
			Conditions:          []metav1.Condition{cond},
		},
	}
	sessions, omitted := boundSessions(st.Sessions, StatusSessionLimit)
	body.Status.Sessions, body.Status.SessionsOmitted = sessions, int64(omitted)
	if body.Status.Sessions == nil {
		body.Status.Sessions = []v1alpha1.BGPSessionStatus{}
	}
	if st.RouterID.IsValid() {
		body.Status.RouterID = st.RouterID.String()
	}
	body.Status.ASNumber = int64(st.ASN)
	// Compare without the transition time, which only moves on change.
	key, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if bytes.Equal(key, w.last) {
		return nil
	}
	if cond.Status != w.ready {
		w.ready, w.readySince = cond.Status, metav1.NewTime(time.Now().Truncate(time.Second))
	}
	body.Status.Conditions[0].LastTransitionTime = w.readySince
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	force := true
	_, err = w.client.RhizomeNodes().Patch(ctx, w.node, types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: FieldManager, Force: &force}, "status")
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("RhizomeNode %s does not exist yet; the agent creates it", w.node)
	}
	if err != nil {
		return fmt.Errorf("applying the BGP status of RhizomeNode %s: %w", w.node, err)
	}
	w.last = key
	w.writes++
	return nil
}

// readyCondition is BGPReady: True when every session that should be up
// is established and the RIB has every peer's table.
func readyCondition(st Status) metav1.Condition {
	c := metav1.Condition{Type: ConditionBGPReady, Status: metav1.ConditionTrue, Reason: "AllSessionsEstablished"}
	var down []string
	for _, s := range st.Sessions {
		if s.State != "Established" {
			down = append(down, fmt.Sprintf("%s (%s)", s.Peer, s.State))
		}
	}
	switch {
	case len(st.Problems) > 0 && len(down) == 0 && st.Total == 0:
		c.Status, c.Reason = metav1.ConditionFalse, "ConfigurationProblem"
		c.Message = strings.Join(st.Problems, "; ")
	case len(down) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "SessionsDown"
		c.Message = fmt.Sprintf("%s established; not established: %s", st.SessionsEstablished(), strings.Join(down, ", "))
	case !st.Converged:
		c.Status, c.Reason = metav1.ConditionFalse, "Converging"
		c.Message = "waiting for every peer's End-of-RIB"
	default:
		c.Message = fmt.Sprintf("%s sessions established", st.SessionsEstablished())
	}
	if len(c.Message) > 1024 {
		c.Message = c.Message[:1021] + "..."
	}
	return c
}
