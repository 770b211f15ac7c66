package bfd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// A planned restart of the agent (RFC 5882 4.3.2.2: "an implementation MAY
// adjust the BFD session timing parameters prior to restarting in such a
// way that the Detection Time in each direction is longer than the restart
// period of the control protocol").
//
// The agent that stops announces, with a Poll Sequence, a transmit interval
// of hold/multiplier on every Up session, so that each peer's detection
// time becomes the hold (the BGP graceful-restart time): the peer's BFD
// session stays Up while we are away. The sessions are handed to the next
// agent (Suspended, in a file next to the local API socket), which resumes
// each as Up with the same discriminators and polls back to its timers:
// the peer sees one session that slowed down and sped up again, never a
// Down. Peers whose BGP closes the session on any BFD Down (BIRD 2.0.12,
// FRR without check-control-plane-failure) then keep our routes through
// the restart. A crash has no such hand-over: the peers' sessions time
// out, after the BGP connections closed (design 0017).

// Suspended is a session handed from an agent that stops for a restart to
// the one that starts.
type Suspended struct {
	Peer                    Peer
	LocalDiscr, RemoteDiscr uint32
	// RemoteMinRx, RemoteMinTx and RemoteMult are what the peer last said.
	RemoteMinRx, RemoteMinTx time.Duration
	RemoteMult               uint8
	// HoldTx is the transmit interval we announced for the restart; the
	// peer's detection time is our multiplier times it.
	HoldTx time.Duration
	// Until is when the peer's detection time runs out: resuming later is
	// pointless, the peer has taken the session down.
	Until time.Time
	Since time.Time
}

// CloseForRestart suspends every Up session whose hold(peer) is positive
// and closes the Manager. It announces the long interval, waits until each
// peer answered the poll (Final) or ctx ends, and returns the sessions the
// peers confirmed; the others are just closed (their peers time out).
func (m *Manager) CloseForRestart(ctx context.Context, hold func(peer netip.Addr) time.Duration) []Suspended {
	m.mu.Lock()
	all := make([]*msession, 0, len(m.byPeer))
	for _, s := range m.byPeer {
		all = append(all, s)
	}
	m.mu.Unlock()
	type waiting struct {
		s    *msession
		done chan struct{}
		hold time.Duration
	}
	var ws []waiting
	for _, s := range all {
		h := hold(s.peer.Remote)
		s.mu.Lock()
		if s.core.state == Up && h > 0 && !s.done {
			tx := h / time.Duration(max(s.core.cfg.Multiplier, 1))
			s.core.announce(min(tx, maxInterval), s.core.requiredMinRx)
			s.pollDone = make(chan struct{})
			ws = append(ws, waiting{s: s, done: s.pollDone, hold: h})
		}
		s.mu.Unlock()
	}
	var out []Suspended
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			continue
		}
		s := w.s
		s.mu.Lock()
		c := s.core
		if c.state == Up && !s.done {
			out = append(out, Suspended{
				Peer: s.peer, LocalDiscr: c.localDiscr, RemoteDiscr: c.remoteDiscr,
				RemoteMinRx: c.remoteMinRx, RemoteMinTx: c.remoteMinTx, RemoteMult: c.remoteMult,
				HoldTx: c.desiredMinTx,
				Until:  m.clock.Now().Add(time.Duration(c.cfg.Multiplier) * c.desiredMinTx),
				Since:  s.since,
			})
		}
		s.mu.Unlock()
	}
	m.log.Info("BFD sessions suspended for a restart", "op", "suspend", "sessions", len(out), "of", len(all))
	_ = m.Close()
	return out
}

// Resume gives the Manager sessions suspended by the agent before it: a
// later Set for the same peer and local address starts that session Up
// with its discriminators, if its hold has not run out, and polls back to
// the configured timers.
func (m *Manager) Resume(l []Suspended) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.resume == nil {
		m.resume = make(map[netip.Addr]Suspended, len(l))
	}
	for _, s := range l {
		m.resume[s.Peer.Remote.WithZone("")] = s
	}
}

// resumedLocked returns the suspended session to resume for p, if any.
// Called with m.mu held.
func (m *Manager) resumedLocked(p Peer) (Suspended, bool) {
	key := p.Remote.WithZone("")
	s, ok := m.resume[key]
	if !ok {
		return s, false
	}
	delete(m.resume, key)
	if s.Peer.Local != p.Local || !m.clock.Now().Before(s.Until) || s.LocalDiscr == 0 || m.byDiscr[s.LocalDiscr] != nil {
		return s, false
	}
	return s, true
}

// resumedSession is a session that continues a suspended one: Up, as the
// peer still sees it, with the interval the peer last heard, then
// reconfigured (a faster interval at once, a Poll Sequence to confirm).
func resumedSession(sus Suspended, t Timers, now time.Time) *session {
	s := newSession(sus.LocalDiscr, t)
	s.state, s.remoteState = Up, Up
	s.remoteDiscr = sus.RemoteDiscr
	s.remoteMinRx, s.remoteMinTx, s.remoteMult = sus.RemoteMinRx, sus.RemoteMinTx, sus.RemoteMult
	s.desiredMinTx, s.requiredMinRx = sus.HoldTx, t.MinRx
	s.txBase, s.rxBase = s.desiredMinTx, s.requiredMinRx
	s.lastRx = now
	s.configure(t)
	return s
}

// SuspendedFile is the file, next to the local API socket, that hands the
// suspended sessions to the next agent.
func SuspendedFile(dir string) string { return filepath.Join(dir, "bfd-suspended.json") }

// WriteSuspended writes the suspended sessions for the next agent.
func WriteSuspended(path string, l []Suspended) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing the suspended BFD sessions: %w", err)
	}
	return os.Rename(tmp, path)
}

// ReadSuspended reads and removes the suspended sessions a previous agent
// left; none (and no error) when there is no file.
func ReadSuspended(path string) ([]Suspended, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	_ = os.Remove(path) // one agent resumes them, once
	var l []Suspended
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("reading the suspended BFD sessions in %s: %w", path, err)
	}
	return l, nil
}
