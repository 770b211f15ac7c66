// Package nsthread runs a function on an OS thread switched into another
// network namespace.
//
// Go schedules goroutines over threads and setns(2) changes only the
// calling thread, so the switch happens on a fresh goroutine locked to its
// thread. If the thread cannot be switched back it stays locked and Go
// discards it when the goroutine ends: no other goroutine ever runs in the
// wrong namespace. Processes started by fn inherit the namespace; goroutines
// it starts do not.
package nsthread

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn in the network namespace bound at path (e.g.
// /run/netns/NAME) and returns fn's error, joined with any error of
// entering or leaving the namespace.
func Do(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the thread is discarded with the locked goroutine
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving namespace %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
