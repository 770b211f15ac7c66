package bfd

import (
	"context"
	"slices"
	"sync"
)

// Watch implements Sessions.
func (m *Manager) Watch(ctx context.Context, f func(Event)) {
	w := newWatcher(f)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		w.stop()
		return
	}
	m.setWatchersLocked(append(m.watchersLocked(), w))
	m.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-w.quit:
		}
		m.mu.Lock()
		if !m.closed {
			m.setWatchersLocked(slices.DeleteFunc(m.watchersLocked(), func(x *watcher) bool { return x == w }))
		}
		m.mu.Unlock()
		w.stop()
	}()
}

// watchersLocked returns a copy of the watcher list to modify. Called with
// m.mu held.
func (m *Manager) watchersLocked() []*watcher {
	if ws := m.watchers.Load(); ws != nil {
		return slices.Clone(*ws)
	}
	return nil
}

func (m *Manager) setWatchersLocked(ws []*watcher) { m.watchers.Store(&ws) }

// watcher delivers events in order from its own goroutine, queueing
// without bound so that pushing never blocks a session.
type watcher struct {
	f     func(Event)
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
	quit  chan struct{}
	once  sync.Once
}

func newWatcher(f func(Event)) *watcher {
	w := &watcher{f: f, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	go w.run()
	return w
}

func (w *watcher) push(e Event) {
	w.mu.Lock()
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) stop() { w.once.Do(func() { close(w.quit) }) }

func (w *watcher) run() {
	for {
		select {
		case <-w.quit:
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, e := range q {
				select {
				case <-w.quit:
					return
				default:
				}
				w.f(e)
			}
		}
	}
}
