// Package cniruntime drives CNI plugins the way a container runtime on a node
// does, for the lab and the tests: through libcni, with the plugins executed
// inside the node's network namespace, so that their host-side work happens
// in that node and nowhere else.
package cniruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/rhizome-net/rhizome/internal/nsthread"
)

// Runtime runs CNI operations for the pods of one node.
type Runtime struct {
	// NodeNS is the node's network namespace name (as `ip netns` knows it).
	NodeNS string
	// CNI is the libcni configuration (plugin directories, result cache).
	CNI *libcni.CNIConfig
}

// New returns a runtime for the node, with plugins in binDirs and libcni's
// cache in cacheDir.
func New(nodeNS string, binDirs []string, cacheDir string) *Runtime {
	return &Runtime{NodeNS: nodeNS, CNI: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, &nsExec{ns: nodeNS})}
}

// Pod is one attachment request.
type Pod struct {
	Namespace, Name, ContainerID string
	// NetNS is the path of the pod's network namespace.
	NetNS string
	// IfName defaults to eth0.
	IfName string
	// CapabilityArgs are runtime capabilities (portMappings, bandwidth).
	CapabilityArgs map[string]any
}

// RuntimeConf is the libcni form of the pod.
func (p Pod) RuntimeConf() *libcni.RuntimeConf {
	ifName := p.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	return &libcni.RuntimeConf{
		ContainerID:    p.ContainerID,
		NetNS:          p.NetNS,
		IfName:         ifName,
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name}, {"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}},
		CapabilityArgs: p.CapabilityArgs,
	}
}

// Add runs ADD for the pod through the list.
func (r *Runtime) Add(ctx context.Context, list *libcni.NetworkConfigList, p Pod) (*current.Result, error) {
	res, err := r.CNI.AddNetworkList(ctx, list, p.RuntimeConf())
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Del runs DEL for the pod.
func (r *Runtime) Del(ctx context.Context, list *libcni.NetworkConfigList, p Pod) error {
	return r.CNI.DelNetworkList(ctx, list, p.RuntimeConf())
}

// Check runs CHECK for the pod.
func (r *Runtime) Check(ctx context.Context, list *libcni.NetworkConfigList, p Pod) error {
	return r.CNI.CheckNetworkList(ctx, list, p.RuntimeConf())
}

// nsExec executes plugins inside the node's namespace. The plugin process
// is forked from an OS thread switched into that namespace, so it starts
// there as it would on a real node, without `ip netns exec` (whose mount
// work would otherwise be counted in every CNI call the lab measures).
type nsExec struct {
	ns string
	version.PluginDecoder
}

func (e *nsExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := e.startIn(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Code != 0 {
			return nil, &perr
		}
		return nil, fmt.Errorf("plugin %s in %s: %w: %s %s", filepath.Base(path), e.ns, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// startIn starts cmd from a thread switched into the node's namespace; the
// child inherits the thread's namespace. The thread is switched back, or
// left locked (and discarded by Go) if that fails.
func (e *nsExec) startIn(cmd *exec.Cmd) error {
	return nsthread.Do(filepath.Join("/run/netns", e.ns), cmd.Start)
}

func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
