package lab

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseBFD(t *testing.T) {
	for _, c := range []struct {
		in   string
		iv   time.Duration
		mult int
		ok   bool
	}{
		{"300x3", 300 * time.Millisecond, 3, true},
		{"100x3", 100 * time.Millisecond, 3, true},
		{"10x1", 10 * time.Millisecond, 1, true},
		{"300", 0, 0, false},
		{"5x3", 0, 0, false},
		{"300x0", 0, 0, false},
		{"300x256", 0, 0, false},
		{"ax3", 0, 0, false},
	} {
		iv, mult, err := ParseBFD(c.in)
		if (err == nil) != c.ok || iv != c.iv || mult != c.mult {
			t.Errorf("ParseBFD(%q) = %s, %d, %v", c.in, iv, mult, err)
		}
	}
	if err := (Options{Nodes: 2, Racks: 1, ToR: "bird", Mode: "mesh", Encap: "none", BFD: "300x"}).Validate(); err == nil {
		t.Error("a malformed --bfd passed Validate")
	}
}

// TestToRConfigsWithBFD: with --bfd the ToRs' configurations turn BFD on
// for the node sessions, with the lab's interval and multiplier.
func TestToRConfigsWithBFD(t *testing.T) {
	o := Options{Nodes: 2, Racks: 1, ToR: "bird", Mode: "mesh", Encap: "none", BFD: "100x3"}
	plan, err := NewPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lab{Dir: t.TempDir(), Plan: plan}
	cfg := l.torConfig(plan.Racks[0])
	var bird, frr bytes.Buffer
	if err := birdConf.Execute(&bird, cfg); err != nil {
		t.Fatal(err)
	}
	if err := frrConf.Execute(&frr, cfg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol bfd", "min rx interval 100 ms;", "multiplier 3;", "bfd on;", "error wait time 1, 10;"} {
		if !strings.Contains(bird.String(), want) {
			t.Errorf("BIRD configuration lacks %q:\n%s", want, bird.String())
		}
	}
	for _, want := range []string{"neighbor NODES bfd profile nodes", "neighbor NODES update-source 10.0.1.1"} {
		if !strings.Contains(frr.String(), want) {
			t.Errorf("FRR configuration lacks %q:\n%s", want, frr.String())
		}
	}
	l.Plan.Opts.BFD = ""
	bird.Reset()
	if err := birdConf.Execute(&bird, l.torConfig(plan.Racks[0])); err != nil || strings.Contains(bird.String(), "bfd") {
		t.Errorf("BFD in BIRD's configuration without --bfd (%v):\n%s", err, bird.String())
	}
}
