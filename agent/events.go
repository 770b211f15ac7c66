package agent

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// The agent reports what an operator should see in `kubectl describe
// rhizomenode` as Events on its RhizomeNode: BGP sessions going down and
// coming up, and routes it cannot program. A flapping session must not
// become an event storm (each Event is an API write, kept for an hour), so
// events are limited per subject (a peer, the routes) to one per interval;
// what happens in between is folded into the next one ("and 7 more changes
// since"), and the last state is always reported once things are quiet.
// On top, a budget per minute bounds the whole agent (a partition taking
// down 500 sessions at once is one summary event, not 500).

// eventSink records an Event; *kubecore.Recorder implements it (in the
// background: Eventf never blocks on the API server).
type eventSink interface {
	Eventf(obj kubecore.Object, eventType, reason, format string, args ...any)
}

type nodeEvents struct {
	sink eventSink
	// node returns this node's RhizomeNode (nil before it exists).
	node func() kubecore.Object
	// every is the shortest time between two events of one subject;
	// budget the most events in a minute.
	every  time.Duration
	budget int
	now    func() time.Time

	mu       sync.Mutex
	subjects map[string]*eventSubject
	window   time.Time // start of the budget's minute
	sent     int       // events in the window
	overflow int       // events folded into the next summary
}

type eventSubject struct {
	last       time.Time
	pending    *pendingEvent
	suppressed int
}

type pendingEvent struct{ typ, reason, msg string }

func newNodeEvents(sink eventSink, node func() kubecore.Object) *nodeEvents {
	return &nodeEvents{sink: sink, node: node, every: 30 * time.Second, budget: 20, now: time.Now, subjects: map[string]*eventSubject{}}
}

// emit records an event about subject now, or holds it until the subject's
// interval has passed (flush sends it then).
func (e *nodeEvents) emit(subject, typ, reason, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.subjects[subject]
	if s == nil {
		s = &eventSubject{}
		e.subjects[subject] = s
	}
	now := e.now()
	if now.Sub(s.last) < e.every {
		if s.pending != nil {
			s.suppressed++
		}
		s.pending = &pendingEvent{typ, reason, msg}
		return
	}
	e.sendLocked(s, pendingEvent{typ, reason, msg}, now)
}

// flush sends what was held back once its subject's interval has passed,
// and the summary of what the budget held back. Call it periodically.
func (e *nodeEvents) flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	keys := make([]string, 0, len(e.subjects))
	for k := range e.subjects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := e.subjects[k]
		if s.pending != nil && now.Sub(s.last) >= e.every {
			e.sendLocked(s, *s.pending, now)
		}
	}
	if e.overflow > 0 && now.Sub(e.window) >= time.Minute {
		obj := e.node()
		if obj != nil {
			e.sink.Eventf(obj, corev1.EventTypeWarning, "EventsSuppressed", "%d more BGP session or route changes in the last minute were not reported as events; see the agent's log and rhizomectl bgp peers", e.overflow)
			e.overflow = 0
			e.window, e.sent = now, 1
		}
	}
}

func (e *nodeEvents) sendLocked(s *eventSubject, ev pendingEvent, now time.Time) {
	obj := e.node()
	if obj == nil {
		return // no RhizomeNode yet: nothing to attach events to
	}
	if now.Sub(e.window) >= time.Minute {
		e.window, e.sent = now, 0
	}
	if e.sent >= e.budget {
		e.overflow += 1 + s.suppressed
		s.pending, s.suppressed, s.last = nil, 0, now
		return
	}
	msg := ev.msg
	if s.suppressed > 0 {
		msg += fmt.Sprintf(" (after %d more changes since %s)", s.suppressed, s.last.UTC().Format(time.RFC3339))
	}
	e.sink.Eventf(obj, ev.typ, ev.reason, "%s", msg)
	e.sent++
	s.last, s.pending, s.suppressed = now, nil, 0
}

// sessionChanged turns a session going down or coming up into an event;
// the states a down session cycles through (Idle, Connect, Active) are not
// events. It runs on the speaker's event goroutine: it never blocks.
func (e *nodeEvents) sessionChanged(c reconcile.SessionChange) {
	const established = "Established"
	subject := "bgp/" + c.Peer.String()
	switch {
	case c.From == established && c.To != established && c.PrefixLimit:
		e.emit(subject, corev1.EventTypeWarning, "BGPPrefixLimitExceeded", fmt.Sprintf("BGP session with %s (%s) closed: %s", c.Peer, c.Kind, c.Reason))
	case c.From == established && c.To != established:
		msg := fmt.Sprintf("BGP session with %s (%s) went down: %s", c.Peer, c.Kind, c.To)
		if c.Reason != "" {
			msg += ": " + c.Reason
		}
		e.emit(subject, corev1.EventTypeWarning, "BGPSessionDown", msg)
	case c.To == established && c.From != established:
		e.emit(subject, corev1.EventTypeNormal, "BGPSessionEstablished", fmt.Sprintf("BGP session with %s (%s) established", c.Peer, c.Kind))
	}
}

// routeErrors reports routes the route programmer cannot install, when the
// set of failing prefixes changes.
type routeErrorState struct{ last string }

func (e *nodeEvents) routeErrors(st *routeErrorState, errs map[string]string) {
	keys := make([]string, 0, len(errs))
	for p := range errs {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	key := strings.Join(keys, ",")
	if key == st.last {
		return
	}
	st.last = key
	if len(keys) == 0 {
		e.emit("routes", corev1.EventTypeNormal, "RoutesProgrammed", "every route is programmed again")
		return
	}
	var parts []string
	for i, p := range keys {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(keys)-3))
			break
		}
		parts = append(parts, p+": "+errs[p])
	}
	e.emit("routes", corev1.EventTypeWarning, "RouteProgrammingFailed", fmt.Sprintf("%d route(s) cannot be programmed: %s", len(keys), strings.Join(parts, "; ")))
}

// rejectedState is what routesRejected last reported, per session: the
// rejections it counts, by reason.
type rejectedState struct{ last map[string]map[string]int64 }

// heldReason is a route from our nodes that IPAM does not justify yet (a
// block's route before its IPAMBlock): routine while blocks are claimed,
// so it never makes an event by itself.
const heldReason = "held"

// routesRejected reports, for the sessions to our own nodes (mesh, rr),
// prefixes the import policy rejected because IPAM does not let the node
// announce them (docs/design/0014): a warning whenever a session's count
// of such rejections grows. None of them is installed or passed on; the
// rest of what the node sends still is. External peers are left out:
// their filters rejecting routes is configuration, not an attack.
func (e *nodeEvents) routesRejected(st *rejectedState, sessions []v1alpha1.BGPSessionStatus) {
	seen := make(map[string]map[string]int64, len(sessions))
	for _, s := range sessions {
		if s.Kind == v1alpha1.SessionExternal {
			continue
		}
		cur := make(map[string]int64, len(s.PrefixesRejected))
		grew := false
		var total int64
		for r, n := range s.PrefixesRejected {
			if r == heldReason || n <= 0 {
				continue
			}
			cur[r] = n
			total += n
			if n > st.last[s.Peer][r] {
				grew = true
			}
		}
		seen[s.Peer] = cur
		if !grew {
			continue
		}
		reasons := make([]string, 0, len(cur))
		for r, n := range cur {
			reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
		}
		sort.Strings(reasons)
		from := string(s.Kind)
		if s.Source != "" {
			from += " " + s.Source
		}
		msg := fmt.Sprintf("%d prefix(es) from %s (%s) rejected: IPAM does not let that node announce them (%s); they are neither installed nor passed on, its valid routes still are",
			total, s.Peer, from, strings.Join(reasons, ","))
		if h := s.PrefixesRejected[heldReason]; h > 0 {
			msg += fmt.Sprintf("; %d more held until an IPAMBlock justifies them", h)
		}
		e.emit("rejected/"+s.Peer, corev1.EventTypeWarning, "RoutesRejected", msg)
	}
	st.last = seen
}
