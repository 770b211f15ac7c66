package ctl

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/internal/version"
)

// versionCommand prints this rhizomectl's build. The agent's build is on its
// metrics (rhizome_build_info) and `rhizome-agent --version`; asking the
// local API for it would tie this command to a running agent, and `version`
// must answer on a machine without one.
func (g *globals) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "This rhizomectl's version, commit, build date and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch g.output {
			case "json":
				b, err := json.MarshalIndent(struct {
					Client version.Info `json:"client"`
				}{version.Get()}, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.out, "%s\n", b)
				return err
			case "":
				_, err := fmt.Fprintf(g.out, "Client: %s\n", version.Get())
				return err
			default:
				return fmt.Errorf("-o %q: want json or nothing", g.output)
			}
		},
	}
}
