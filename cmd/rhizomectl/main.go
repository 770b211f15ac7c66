// Command rhizomectl inspects and operates Rhizome; see package ctl. The
// same binary is the kubectl plugin kubectl-rhizome (make build installs
// it under both names).
package main

import (
	"context"
	"errors"
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
		code := 1
		var ee *ctl.ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
		fmt.Fprintln(os.Stderr, "rhizomectl:", err)
		stop()
		os.Exit(code)
	}
}
