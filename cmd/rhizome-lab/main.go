// Command rhizome-lab runs a whole Rhizome cluster on one machine; see
// package lab.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rhizome-net/rhizome/test/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := lab.NewCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rhizome-lab:", err)
		os.Exit(1)
	}
}
