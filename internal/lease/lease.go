// Package lease elects one leader among processes through a
// coordination.k8s.io/v1 Lease, with client-go's algorithm: a candidate
// takes a Lease that does not exist, that is released, or whose holder has
// not renewed it for LeaseDuration as observed on the candidate's own
// clock; the leader renews every RetryPeriod and steps down when it could
// not renew for RenewDeadline. Writes use the Lease's resourceVersion, so
// two candidates never both succeed.
//
// It exists because k8s.io/client-go/tools/leaderelection links every API
// group of k8s.io/api through its typed clients and informers (~10 MiB of
// the agent's memory, docs/design/0008).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// Config says which Lease, who we are and how fast to move.
type Config struct {
	Leases   kubecore.Leases // in the Lease's namespace
	Name     string
	Identity string
	Duration time.Duration    // how long others wait after the last renewal they saw
	Deadline time.Duration    // the leader steps down when renewals failed this long
	Retry    time.Duration    // between attempts to take or renew
	Clock    clock.WithTicker // default: the real clock
	Logger   *slog.Logger
}

func (c *Config) validate() error {
	switch {
	case c.Leases == nil || c.Name == "" || c.Identity == "":
		return errors.New("lease election: Leases, Name and Identity are required")
	case c.Duration <= c.Deadline:
		return fmt.Errorf("lease election: duration %s must be longer than the renew deadline %s", c.Duration, c.Deadline)
	case c.Deadline <= c.Retry || c.Retry <= 0:
		return fmt.Errorf("lease election: renew deadline %s must be longer than the retry period %s (> 0)", c.Deadline, c.Retry)
	}
	return nil
}

// Elector takes part in one election.
type Elector struct {
	cfg Config
	clk clock.WithTicker
	log *slog.Logger

	// What we last saw of the Lease and when, on our clock.
	observed     *coordinationv1.Lease
	observedTime time.Time
}

// New checks cfg and returns an Elector.
func New(cfg Config) (*Elector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Elector{cfg: cfg, clk: cfg.Clock, log: cfg.Logger}
	if e.clk == nil {
		e.clk = clock.RealClock{}
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	return e, nil
}

// Run stands for election until it wins or ctx ends, then calls lead with
// a context that ends when leadership is lost or ctx ends, and waits for
// lead to return. On ctx's end it releases the Lease so that another
// candidate need not wait for it to expire. Run returns after one term
// (or none); callers loop to stand again.
func (e *Elector) Run(ctx context.Context, lead func(context.Context)) {
	if !e.acquire(ctx) {
		return
	}
	leadCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(leadCtx)
	}()
	e.renew(leadCtx)
	cancel()
	<-done
	if ctx.Err() != nil {
		e.release()
	}
}

// acquire retries about every Retry period until it holds the Lease or
// ctx ends.
func (e *Elector) acquire(ctx context.Context) bool {
	for {
		ok, err := e.tryAcquireOrRenew(ctx)
		if ok {
			e.log.Info("lease taken", "op", "elect", "lease", e.cfg.Name, "identity", e.cfg.Identity)
			return true
		}
		if err != nil && ctx.Err() == nil {
			e.log.Info("lease not taken", "op", "elect", "lease", e.cfg.Name, "error", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-e.clk.After(wait.Jitter(e.cfg.Retry, 0.2)):
		}
	}
}

// renew keeps the Lease until a renewal has not succeeded for Deadline or
// ctx ends.
func (e *Elector) renew(ctx context.Context) {
	t := e.clk.NewTicker(e.cfg.Retry)
	defer t.Stop()
	last := e.clk.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		attempt, cancel := context.WithTimeout(ctx, e.cfg.Retry)
		ok, err := e.tryAcquireOrRenew(attempt)
		cancel()
		if ok {
			last = e.clk.Now()
			continue
		}
		if err == nil {
			// Someone else holds it: we read their record.
			e.log.Info("lease lost to another holder", "op", "elect", "lease", e.cfg.Name)
			return
		}
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("lease not renewed", "op", "elect", "lease", e.cfg.Name, "error", err)
		if e.clk.Since(last) >= e.cfg.Deadline {
			e.log.Info("lease lost: not renewed in time", "op", "elect", "lease", e.cfg.Name,
				"since_last_renewal", e.clk.Since(last).String())
			return
		}
	}
}

// tryAcquireOrRenew takes the Lease if it is free or ours. It returns
// (false, nil) when another holder's claim is still valid.
func (e *Elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	now := metav1.NewMicroTime(e.clk.Now())
	seconds := int32(e.cfg.Duration.Round(time.Second) / time.Second)
	cur, err := e.cfg.Leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.cfg.Name},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: &e.cfg.Identity, LeaseDurationSeconds: &seconds,
				AcquireTime: &now, RenewTime: &now, LeaseTransitions: new(int32),
			},
		}
		created, err := e.cfg.Leases.Create(ctx, l, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("creating lease %s: %w", e.cfg.Name, err)
		}
		e.observe(created)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading lease %s: %w", e.cfg.Name, err)
	}
	if e.observed == nil || e.observed.ResourceVersion != cur.ResourceVersion {
		e.observe(cur)
	}
	holder := ""
	if cur.Spec.HolderIdentity != nil {
		holder = *cur.Spec.HolderIdentity
	}
	ours := holder == e.cfg.Identity
	if !ours && holder != "" && e.clk.Since(e.observedTime) < leaseDuration(cur, e.cfg.Duration) {
		return false, nil // held, and renewed recently as far as we can tell
	}
	next := cur.DeepCopy()
	next.Spec.HolderIdentity = &e.cfg.Identity
	next.Spec.LeaseDurationSeconds = &seconds
	next.Spec.RenewTime = &now
	if !ours {
		next.Spec.AcquireTime = &now
		n := int32(0)
		if cur.Spec.LeaseTransitions != nil {
			n = *cur.Spec.LeaseTransitions
		}
		n++
		next.Spec.LeaseTransitions = &n
	}
	updated, err := e.cfg.Leases.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return false, fmt.Errorf("updating lease %s: %w", e.cfg.Name, err)
	}
	e.observe(updated)
	return true, nil
}

func (e *Elector) observe(l *coordinationv1.Lease) {
	e.observed, e.observedTime = l, e.clk.Now()
}

// leaseDuration is the holder's own promise when it wrote one.
func leaseDuration(l *coordinationv1.Lease, def time.Duration) time.Duration {
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return def
}

// release gives the Lease up if we still hold it: the holder is cleared
// and the duration set to one second, as client-go does.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Retry)
	defer cancel()
	cur, err := e.cfg.Leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if err != nil || cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != e.cfg.Identity {
		return
	}
	next := cur.DeepCopy()
	one := int32(1)
	empty := ""
	now := metav1.NewMicroTime(e.clk.Now())
	next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds, next.Spec.RenewTime = &empty, &one, &now
	if _, err := e.cfg.Leases.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		e.log.Warn("lease not released", "op", "elect", "lease", e.cfg.Name, "error", err)
		return
	}
	e.log.Info("lease released", "op", "elect", "lease", e.cfg.Name)
}
