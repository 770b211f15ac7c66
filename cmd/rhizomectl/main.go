// Command rhizomectl inspects and operates Rhizome; see package ctl.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rhizome-net/rhizome/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := ctl.NewCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rhizomectl:", err)
		os.Exit(1)
	}
}
