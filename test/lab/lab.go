// Package lab is the rhizome-lab command: a whole Rhizome cluster on one
// machine, built from a real control plane, network namespaces as nodes and
// routers, and real agent processes. It is both the demo and the end-to-end
// test bed.
package lab

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// DefaultDir is where the lab keeps its state unless RHIZOME_LAB_DIR says
// otherwise.
const DefaultDir = "/tmp/rhizome-lab"

// Dir returns the lab's state directory.
func Dir() string {
	if d := os.Getenv("RHIZOME_LAB_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

func controlPlaneDir() string { return filepath.Join(Dir(), "controlplane") }

// NewCommand returns the rhizome-lab root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "rhizome-lab",
		Short:         "Run a whole Rhizome cluster on one machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newControlPlaneCommand())
	return root
}
