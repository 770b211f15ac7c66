//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// Watching the states between: the tests of issue 16 do not compare a
// before and an after; they watch while it happens. A fastPing sends a
// ping every 10 ms and keeps every reply's sequence number, so an outage
// of a single packet shows and its length is measured; a routeMonitor runs
// `ip monitor route` in a namespace (a ToR, a node) and keeps every line
// with the time it arrived, so a route that was deleted and re-added
// between two polls is still seen.

// pingInterval is the interval of fastPing: 10 ms.
const pingInterval = 10 * time.Millisecond

// fastPing is a continuous ping from a pod to an address.
type fastPing struct {
	name  string
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{}

	mu      sync.Mutex
	seqs    []int       // sequence numbers of the replies, in arrival order
	at      []time.Time // when each reply arrived
	summary string
}

// replySeq finds a reply's sequence number (pingSummary, in
// faults_test.go, the summary line).
var replySeq = regexp.MustCompile(`bytes from .*icmp_seq=(\d+)`)

// startFastPing pings to from the pod every 10 ms until stop.
func startFastPing(t *testing.T, l *lab.Lab, from lab.PodRecord, to, name string) *fastPing {
	t.Helper()
	nsName := from.NetNS[strings.LastIndexByte(from.NetNS, '/')+1:]
	p := &fastPing{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("ip", "netns", "exec", nsName, "ping", "-n", "-i", "0.01", "-W", "1", to)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.start = time.Now()
	go p.read(out)
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

func (p *fastPing) read(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := replySeq.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			p.mu.Lock()
			p.seqs = append(p.seqs, n)
			p.at = append(p.at, time.Now())
			p.mu.Unlock()
		} else if strings.Contains(line, "packets transmitted") {
			p.mu.Lock()
			p.summary = line
			p.mu.Unlock()
		}
	}
	p.cmd.Wait()
}

// lastReplyBefore and firstReplyAfter bracket an outage: the last reply
// that arrived before t and the first after it (zero times if none).
func (p *fastPing) lastReplyBefore(t time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, a := range p.at {
		if a.Before(t) {
			last = a
		}
	}
	return last
}

func (p *fastPing) firstReplyAfter(t time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.at {
		if a.After(t) {
			return a
		}
	}
	return time.Time{}
}

// pingResult is what a fastPing saw.
type pingResult struct {
	Name           string
	Sent, Received int
	// Outages are the runs of consecutive lost packets, as durations
	// (packets × 10 ms), with the time the first lost packet was sent.
	Outages []outage
}

type outage struct {
	At   time.Duration // since the ping started
	Lost int
}

func (o outage) Duration() time.Duration { return time.Duration(o.Lost) * pingInterval }

func (r pingResult) Lost() int { return r.Sent - r.Received }

// Longest is the longest outage (0 without loss).
func (r pingResult) Longest() time.Duration {
	var d time.Duration
	for _, o := range r.Outages {
		d = max(d, o.Duration())
	}
	return d
}

func (r pingResult) String() string {
	s := fmt.Sprintf("%s: %d sent, %d lost", r.Name, r.Sent, r.Lost())
	if len(r.Outages) > 0 {
		var parts []string
		for i, o := range r.Outages {
			if i == 5 {
				parts = append(parts, fmt.Sprintf("... %d more", len(r.Outages)-5))
				break
			}
			parts = append(parts, fmt.Sprintf("%d at %.2fs", o.Lost, o.At.Seconds()))
		}
		s += fmt.Sprintf(" (longest outage %s; runs: %s)", r.Longest(), strings.Join(parts, ", "))
	}
	return s
}

// stop ends the ping (SIGINT, so that it prints its summary) and returns
// what it saw. Replies still in flight (up to the 1 s timeout) are lost
// to the count only if ping gave up on them; ping's own summary decides.
func (p *fastPing) stop(t *testing.T) pingResult {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	res := pingResult{Name: p.name}
	m := pingSummary.FindStringSubmatch(p.summary)
	if m == nil {
		t.Fatalf("%s: no ping summary (%d replies seen)", p.name, len(p.seqs))
	}
	res.Sent, _ = strconv.Atoi(m[1])
	res.Received, _ = strconv.Atoi(m[2])
	got := slices.Clone(p.seqs)
	slices.Sort(got)
	got = slices.Compact(got)
	next := 1 // iputils numbers from 1
	for _, s := range got {
		if s > next {
			res.Outages = append(res.Outages, outage{At: time.Duration(next-1) * pingInterval, Lost: s - next})
		}
		next = s + 1
	}
	if tail := res.Sent + 1 - next; tail > 0 {
		res.Outages = append(res.Outages, outage{At: time.Duration(next-1) * pingInterval, Lost: tail})
	}
	return res
}

// routeMonitor runs `ip -4 monitor route` in a lab namespace.
type routeMonitor struct {
	where string
	cmd   *exec.Cmd
	done  chan struct{}

	mu    sync.Mutex
	lines []monitorLine
}

// monitorLine is one line `ip monitor` printed, with when it arrived.
type monitorLine struct {
	At   time.Time
	Text string
}

// Deleted reports whether the line is a deletion.
func (l monitorLine) Deleted() bool { return strings.HasPrefix(l.Text, "Deleted ") }

// Prefix is the destination the line is about.
func (l monitorLine) Prefix() string {
	f := strings.Fields(strings.TrimPrefix(l.Text, "Deleted "))
	for len(f) > 0 && (f[0] == "blackhole" || f[0] == "unreachable" || f[0] == "prohibit" || f[0] == "unicast") {
		f = f[1:]
	}
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// monitorRoutes starts `ip -4 monitor route` in a lab namespace (tor-1,
// node-2, ...) until the test ends.
func monitorRoutes(t *testing.T, l *lab.Lab, target string) *routeMonitor {
	t.Helper()
	w := &routeMonitor{where: target, done: make(chan struct{})}
	w.cmd = exec.Command("ip", "netns", "exec", l.NodeNS(target), "ip", "-4", "monitor", "route")
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " ") {
				continue // ECMP next-hop lines of the line before
			}
			w.mu.Lock()
			w.lines = append(w.lines, monitorLine{At: time.Now(), Text: line})
			w.mu.Unlock()
		}
		w.cmd.Wait()
	}()
	t.Cleanup(func() { w.cmd.Process.Kill(); <-w.done })
	// ip monitor subscribes before it prints anything; give it a moment so
	// that nothing done right after this call is missed.
	time.Sleep(100 * time.Millisecond)
	return w
}

// mark returns a position: events after it are what since returns.
func (w *routeMonitor) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

// since returns the lines seen after mark about one of the prefixes (all
// lines when prefixes is empty).
func (w *routeMonitor) since(mark int, prefixes ...string) []monitorLine {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []monitorLine
	for _, l := range w.lines[mark:] {
		if len(prefixes) == 0 || slices.Contains(prefixes, l.Prefix()) {
			out = append(out, l)
		}
	}
	return out
}

// deletions returns the deletions seen after mark of one of the prefixes.
func (w *routeMonitor) deletions(mark int, prefixes ...string) []monitorLine {
	var out []monitorLine
	for _, l := range w.since(mark, prefixes...) {
		if l.Deleted() {
			out = append(out, l)
		}
	}
	return out
}

// watchSet is a group of route watches and pings for one scenario.
type watchSet struct {
	watches []*routeMonitor
	marks   []int
	pings   []*fastPing
}

// begin marks every watch; pings started afterwards belong to this run.
func (s *watchSet) begin() {
	s.marks = s.marks[:0]
	for _, w := range s.watches {
		s.marks = append(s.marks, w.mark())
	}
	s.pings = nil
}

// scenarioResult is what one scenario saw.
type scenarioResult struct {
	Name      string
	Pings     []pingResult
	Deletions map[string][]monitorLine // where → deletions of watched prefixes
}

// end stops the pings and collects the deletions of prefixes at every
// watched namespace since begin.
func (s *watchSet) end(t *testing.T, name string, prefixes []string) scenarioResult {
	t.Helper()
	res := scenarioResult{Name: name, Deletions: map[string][]monitorLine{}}
	for _, p := range s.pings {
		res.Pings = append(res.Pings, p.stop(t))
	}
	// Late route events (a deletion just before the end) are read too.
	time.Sleep(200 * time.Millisecond)
	for i, w := range s.watches {
		if d := w.deletions(s.marks[i], prefixes...); len(d) > 0 {
			res.Deletions[w.where] = d
		}
	}
	return res
}

func (r scenarioResult) sent() (sent, lost int) {
	for _, p := range r.Pings {
		sent += p.Sent
		lost += p.Lost()
	}
	return sent, lost
}

func (r scenarioResult) deletionCount() int {
	n := 0
	for _, d := range r.Deletions {
		n += len(d)
	}
	return n
}

// report logs the scenario's numbers in one block (the closing
// note quotes them).
func (r scenarioResult) report(t *testing.T) {
	t.Helper()
	sent, lost := r.sent()
	var b strings.Builder
	fmt.Fprintf(&b, "RESULT %s: pings %d sent, %d lost; route deletions %d\n", r.Name, sent, lost, r.deletionCount())
	for _, p := range r.Pings {
		fmt.Fprintf(&b, "  ping %s\n", p)
	}
	for where, d := range r.Deletions {
		for i, l := range d {
			if i == 4 {
				fmt.Fprintf(&b, "  deleted at %s: ... %d more\n", where, len(d)-4)
				break
			}
			fmt.Fprintf(&b, "  deleted at %s: %s\n", where, l.Text)
		}
	}
	t.Log(strings.TrimRight(b.String(), "\n"))
}

// requireNoLoss fails the test when the scenario lost a ping or saw a
// watched route deleted.
func (r scenarioResult) requireNoLoss(t *testing.T) {
	t.Helper()
	r.report(t)
	if sent, lost := r.sent(); lost > 0 || sent == 0 {
		t.Errorf("%s: %d of %d pings lost", r.Name, lost, sent)
	}
	if n := r.deletionCount(); n > 0 {
		t.Errorf("%s: %d route deletions at ToRs or nodes", r.Name, n)
	}
}

// readyWatch polls every agent's /readyz while a scenario runs.
type readyWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  map[string]string // node → a /readyz answer that was not ready
}

// watchReady polls the nodes' readiness every 200 ms until end.
func watchReady(l *lab.Lab, nodes []string) *readyWatch {
	w := &readyWatch{stop: make(chan struct{}), done: make(chan struct{}), bad: map[string]string{}}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		for {
			for _, n := range nodes {
				if ok, why := l.AgentReady(ctx, n); !ok {
					w.mu.Lock()
					if _, seen := w.bad[n]; !seen {
						w.bad[n] = why
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops polling and returns the nodes that were not ready at some
// point, with their first answer.
func (w *readyWatch) end() map[string]string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}
