package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/internal/version"
)

// agentVersion is one agent's build in rhizomectl version -o json|yaml.
type agentVersion struct {
	Node    string        `json:"node"`
	Pod     string        `json:"pod,omitempty"`
	Version *version.Info `json:"version,omitempty"`
	// Error says why this agent's build is unknown.
	Error string `json:"error,omitempty"`
}

type versionDoc struct {
	Client version.Info `json:"client"`
	// Agents are the agent on this node (pod empty) and, with cluster
	// access, every agent pod's, by node.
	Agents []agentVersion `json:"agents"`
}

// versionCommand prints this rhizomectl's build and the agents': the one on
// this node through its socket, and every agent pod's through the API
// server (GET /version on its metrics port). It answers on a machine with
// neither: the client's build is always printed, what could not be asked
// is said on stderr.
func (g *globals) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "This rhizomectl's build and every agent's (this node's, and each agent pod's with cluster access)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc := versionDoc{Client: version.Get(), Agents: []agentVersion{}}
			if !clientOnly {
				doc.Agents = g.agentVersions(cmd.Context())
			}
			return g.emit(doc, func(w io.Writer, _ bool) error {
				fmt.Fprintf(w, "Client: %s\n", doc.Client)
				for _, a := range doc.Agents {
					who := "Agent on " + a.Node
					if a.Pod != "" {
						who += " (" + a.Pod + ")"
					}
					if a.Error != "" {
						fmt.Fprintf(w, "%s: unknown: %s\n", who, a.Error)
						continue
					}
					fmt.Fprintf(w, "%s: %s\n", who, a.Version)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only this rhizomectl's build")
	return cmd
}

func (g *globals) agentVersions(ctx context.Context) []agentVersion {
	out := []agentVersion{}
	if st, err := g.localStatus(ctx); err == nil {
		out = append(out, agentVersion{Node: st.GetNodeName(), Version: infoOf(st.GetBuild())})
	} else if !errNoLocalAgent(err) {
		fmt.Fprintf(g.errOut, "rhizomectl: the local agent: %v\n", err)
	}
	c, err := g.clients()
	if err != nil {
		return out
	}
	pods, err := c.agentPods(ctx, g.namespace, "")
	if err != nil {
		fmt.Fprintf(g.errOut, "rhizomectl: %v\n", err)
		return out
	}
	remote := make([]agentVersion, len(pods))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p := &pods[i]
			av := agentVersion{Node: p.Spec.NodeName, Pod: p.Namespace + "/" + p.Name}
			b, err := c.agentGet(ctx, p, "/version")
			if err == nil {
				var v version.Info
				if err = json.Unmarshal(b, &v); err == nil {
					av.Version = &v
				}
			}
			if err != nil {
				av.Error = err.Error()
			}
			remote[i] = av
		}()
	}
	wg.Wait()
	return append(out, remote...)
}

func infoOf(b *agentapi.Build) *version.Info {
	if b == nil {
		return nil
	}
	return &version.Info{Version: b.GetVersion(), Revision: b.GetRevision(), BuildDate: b.GetBuildDate(), GoVersion: b.GetGoVersion(), Platform: b.GetPlatform()}
}
