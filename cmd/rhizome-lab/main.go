// Command rhizome-lab runs a whole Rhizome cluster on one machine; see
// package lab.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rhizome-net/rhizome/internal/version"
	"github.com/rhizome-net/rhizome/test/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := lab.NewCommand()
	cmd.Version = version.Get().String()
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rhizome-lab:", err)
		os.Exit(1)
	}
}
