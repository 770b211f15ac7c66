package agent

// signaler coalesces notifications: any number of Signal calls between two
// receives on C wake the loop once. Handlers of informers and of the BGP
// speaker only ever signal; the loop recomputes everything (Cilium's
// agent/signaler does the same).
type signaler struct{ C chan struct{} }

func newSignaler() *signaler { return &signaler{C: make(chan struct{}, 1)} }

// Signal wakes the loop without ever blocking.
func (s *signaler) Signal() {
	select {
	case s.C <- struct{}{}:
	default:
	}
}
