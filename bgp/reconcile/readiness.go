package reconcile

import (
	"sync"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Readiness is what the agent's readiness and Events need of BGP.
type Readiness struct {
	// Running is false before the first successful Reconcile.
	Running bool
	// Converged: every peer has sent its table (or the wait timed out).
	Converged bool
	// Sessions and Err are the last status snapshot's (Status, which the
	// status writer takes every status interval): at most about one
	// interval old, nil and nil before the first.
	Sessions []v1alpha1.BGPSessionStatus
	Err      error
}

// Readiness answers without asking the speaker. GoBGP answers its API
// from its server loop, which a reflector converging thousands of clients
// keeps busy for minutes, and the agent's loop, which asks for readiness
// every status interval, must not wait there: it measurably made no pass
// for ~100 s of a 5,000-client convergence (design 0018). Running and
// Converged are read live; the sessions come from the last snapshot.
func (r *Reconciler) Readiness() Readiness {
	r.mu.Lock()
	running, computed := r.sp != nil, r.computed
	r.mu.Unlock()
	st, _, err := r.status.shown.get()
	return Readiness{Running: running, Converged: computed && r.rib.Converged(), Sessions: st.Sessions, Err: err}
}

// readinessSnapshot holds the outcome of the last status compute: the
// last one that succeeded, and the error of the last one.
type readinessSnapshot struct {
	mu  sync.Mutex
	st  Status
	ok  bool
	err error
}

func (s *readinessSnapshot) record(st Status, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	if err == nil {
		s.st, s.ok = st, true
	}
}

// get returns the last successful snapshot (ok false before the first)
// and the last compute's error.
func (s *readinessSnapshot) get() (Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st, s.ok, s.err
}

// status is the last successful snapshot, if there is one.
func (s *readinessSnapshot) status() (Status, bool) {
	st, ok, _ := s.get()
	return st, ok
}
