package cni

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// NetConf is the plugin's network configuration: the standard fields plus
// Rhizome's own. Unknown fields are rejected so that a typo in a conflist
// is reported rather than silently ignored.
type NetConf struct {
	types.PluginConf

	// AgentSocket is the agent's unix socket. Default
	// /var/run/rhizome/agent.sock.
	AgentSocket string `json:"agentSocket,omitempty"`
	// MTU of the pod interface; 0 asks the agent, which derives it from the
	// underlay and the encapsulation in use.
	MTU int `json:"mtu,omitempty"`
	// Timeout bounds each call to the agent, e.g. "30s". Default 30s.
	Timeout string `json:"timeout,omitempty"`
	// LogLevel is debug, info, warn or error (logs go to stderr, which the
	// runtime collects). Default info.
	LogLevel string `json:"logLevel,omitempty"`

	// ValidAttachments are passed by the runtime on GC (CNI 1.1); nil when
	// the key is absent (then GC frees nothing), empty when the runtime
	// has no attachment of this network left.
	ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`

	timeout time.Duration
}

// knownFields are the top-level keys this plugin accepts; the runtime adds
// some of them (prevResult, runtimeConfig, args) itself.
var knownFields = map[string]bool{
	"cniVersion": true, "cniVersions": true, "name": true, "type": true, "capabilities": true,
	"ipam": true, "dns": true, "args": true, "prevResult": true, "runtimeConfig": true,
	"agentSocket": true, "mtu": true, "timeout": true, "logLevel": true,
	"cni.dev/valid-attachments": true, "disableCheck": true, "disableGC": true,
}

// ParseConfigLenient decodes the configuration for DEL and GC: a field it
// does not know, or one of Rhizome's own fields with a bad value (a newer or
// older conflist, a typo made after ADD), never blocks the release of an
// address. Only what DEL and GC need is taken: the network name, the
// agent's socket, the timeout and log level when valid, the attachments.
func ParseConfigLenient(stdin []byte) (*NetConf, *types.Error) {
	var c struct {
		CNIVersion       string                `json:"cniVersion"`
		Name             string                `json:"name"`
		Type             string                `json:"type"`
		AgentSocket      any                   `json:"agentSocket"`
		Timeout          any                   `json:"timeout"`
		LogLevel         any                   `json:"logLevel"`
		ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "the rhizome network configuration is not valid JSON", err.Error())
	}
	conf := &NetConf{ValidAttachments: c.ValidAttachments, timeout: 30 * time.Second, AgentSocket: agentapi.DefaultSocket}
	conf.CNIVersion, conf.Name, conf.Type = c.CNIVersion, c.Name, c.Type
	if s, ok := c.AgentSocket.(string); ok && s != "" {
		conf.AgentSocket = s
	}
	if s, ok := c.Timeout.(string); ok {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			conf.timeout = d
		}
	}
	if s, ok := c.LogLevel.(string); ok {
		switch s {
		case "debug", "info", "warn", "error":
			conf.LogLevel = s
		}
	}
	return conf, nil
}

// ParseConfig decodes and validates the plugin configuration. Every problem
// comes back as a CNI error (code 7, invalid network config, or 6, decoding
// failure) naming the field and what is expected.
func ParseConfig(stdin []byte) (*NetConf, *types.Error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "the rhizome network configuration is not valid JSON", err.Error())
	}
	var unknown []string
	for k := range raw {
		// Keys under cni.dev/ are reserved for runtimes (libcni injects
		// cni.dev/valid-attachments and the older cni.dev/attachments).
		if !knownFields[k] && !strings.HasPrefix(k, "cni.dev/") {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("unknown field(s) %s in the rhizome network configuration", strings.Join(unknown, ", ")),
			"known fields: agentSocket, mtu, timeout, logLevel and the standard CNI fields")
	}
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "the rhizome network configuration has a field of the wrong type", err.Error())
	}
	if conf.MTU < 0 || (conf.MTU != 0 && conf.MTU < 1280) || conf.MTU > 65535 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("mtu %d is out of range", conf.MTU), "use 0 (ask the agent) or 1280-65535")
	}
	conf.timeout = 30 * time.Second
	if conf.Timeout != "" {
		d, err := time.ParseDuration(conf.Timeout)
		if err != nil || d <= 0 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("timeout %q is not a positive duration", conf.Timeout), `write it like "30s"`)
		}
		conf.timeout = d
	}
	switch conf.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("logLevel %q is not one of debug, info, warn, error", conf.LogLevel), "")
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = agentapi.DefaultSocket
	}
	return conf, nil
}

// K8sArgs are the pod attributes a Kubernetes runtime passes in CNI_ARGS.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by the runtime
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// parseK8sArgs extracts pod attributes; missing ones stay empty (a runtime
// other than Kubernetes may pass none).
func parseK8sArgs(args string) (K8sArgs, error) {
	var k K8sArgs
	k.IgnoreUnknown = true
	if err := types.LoadArgs(args, &k); err != nil {
		return k, fmt.Errorf("parsing CNI_ARGS: %w", err)
	}
	return k, nil
}
