package topology

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// BFDConfig is BFD on or off with its timers, defaults filled in.
type BFDConfig struct {
	Enabled bool
	Timers  bfd.Timers
}

// DefaultBFD is BFD off, with 300 ms × 3 timers for when it is turned on.
var DefaultBFD = BFDConfig{Timers: bfd.Timers{
	MinTx:      v1alpha1.DefaultBFDMinTxIntervalMillis * time.Millisecond,
	MinRx:      v1alpha1.DefaultBFDMinRxIntervalMillis * time.Millisecond,
	Multiplier: v1alpha1.DefaultBFDMultiplier,
}}

// BFD interval bounds, as the CRD validates them (the API server refuses
// what is outside; the agent skips what slips through).
const (
	MinBFDInterval = 10 * time.Millisecond
	MaxBFDInterval = 60 * time.Second
)

// mergeBFD overlays b on c field by field. A value out of range is
// reported and left as it was.
func mergeBFD(c BFDConfig, b *v1alpha1.BFD, where string) (BFDConfig, []string) {
	if b == nil {
		return c, nil
	}
	var problems []string
	if b.Enabled != nil {
		c.Enabled = *b.Enabled
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		to   *time.Duration
	}{
		{"minTxInterval", durationOf(b.MinTxInterval), &c.Timers.MinTx},
		{"minRxInterval", durationOf(b.MinRxInterval), &c.Timers.MinRx},
	} {
		switch {
		case f.v == nil:
		case *f.v < MinBFDInterval || *f.v > MaxBFDInterval:
			problems = append(problems, fmt.Sprintf("%s: BFD %s %s is outside %s-%s; using %s", where, f.name, *f.v, MinBFDInterval, MaxBFDInterval, *f.to))
		default:
			*f.to = *f.v
		}
	}
	if m := b.Multiplier; m != nil {
		if *m < 1 || *m > 255 {
			problems = append(problems, fmt.Sprintf("%s: BFD multiplier %d is outside 1-255; using %d", where, *m, c.Timers.Multiplier))
		} else {
			c.Timers.Multiplier = uint8(*m)
		}
	}
	return c, problems
}

func durationOf(d *metav1.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	v := d.Duration
	return &v
}
