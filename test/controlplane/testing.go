package controlplane

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"
)

// shared is the one control plane of a test binary: starting one takes a few
// seconds and ~300 MB, so the tests of a package share it and isolate
// themselves by object names.
var shared struct {
	mu  sync.Mutex
	cp  *ControlPlane
	err error
}

// ForTest returns the test binary's control plane, with Rhizome's CRDs
// installed, starting it on first use. It fails the test, never skips it, if
// the control plane cannot start. Packages that use it call Main from
// TestMain so that it is stopped at the end.
func ForTest(t testing.TB) *ControlPlane {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cp == nil && shared.err == nil {
		// A cold build of the binaries alone takes minutes; `make test`
		// builds them before running the tests.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		shared.cp, shared.err = Start(ctx, Options{Log: os.Stderr})
	}
	if shared.err != nil {
		t.Fatalf("starting the local control plane: %v", shared.err)
	}
	return shared.cp
}

// Main runs a package's tests and then stops the shared control plane.
func Main(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	if shared.cp != nil {
		shared.cp.Stop()
	}
	shared.mu.Unlock()
	os.Exit(code)
}
