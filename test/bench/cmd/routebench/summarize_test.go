package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestSummarizePairsRatiosByRound(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	results := []result{
		// Round 1: the machine is fast; round 2 slow; round 3 has no bird run (failed).
		{receiver: "bird", n: 10, rep: 1, install: ms(100), withdraw: ms(100)},
		{receiver: "rhizome", n: 10, rep: 1, install: ms(90), withdraw: ms(50)},
		{receiver: "bird", n: 10, rep: 2, install: ms(200), withdraw: ms(200)},
		{receiver: "rhizome", n: 10, rep: 2, install: ms(190), withdraw: ms(120)},
		{receiver: "rhizome", n: 10, rep: 3, install: ms(500), withdraw: ms(500)},
	}
	var b bytes.Buffer
	summarize(&b, results, []string{"bird", "rhizome"}, []int{10})
	out := b.String()
	// Medians: rhizome 190/120 ms, bird 150/150 ms; paired: 0.90 and 0.95 install, 0.50 and 0.60 withdraw (round 3 has no pair).
	want := "ratio n=10 rhizome/bird install=1.27 withdraw=0.80 paired_install=0.92 (0.90-0.95) paired_withdraw=0.55 (0.50-0.60) rounds=2"
	if !strings.Contains(out, want) {
		t.Fatalf("summary lacks\n%s\ngot:\n%s", want, out)
	}
	if !strings.Contains(out, "| rhizome | 10 | 3 | 0.190 (0.090-0.500) |") {
		t.Fatalf("median row wrong:\n%s", out)
	}
}
