package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// State is what `up` records for the other commands: the options, the
// processes it started (stopped by PID, after checking the PID still runs
// the recorded program) and the pods it created.
type State struct {
	Options    Options `json:"options"`
	Prefix     string  `json:"prefix"`
	Kubeconfig string  `json:"kubeconfig"`
	// AgentKubeconfig holds only the agents' ServiceAccount token.
	AgentKubeconfig string      `json:"agentKubeconfig"`
	APIPort         int         `json:"apiPort"`
	Procs           []Proc      `json:"procs"`
	Pods            []PodRecord `json:"pods"`
	Started         time.Time   `json:"started"`
	// Joined and Left are nodes added to or removed from the plan after
	// up (node join/leave scenarios).
	Joined []NodePlan `json:"joined,omitempty"`
	Left   []string   `json:"left,omitempty"`

	// Kubelet mode (Options.Kubelet) only.
	Images *KubeImages `json:"images,omitempty"`
	// RolloutSeconds is how long the DaemonSet took to be Ready on every
	// node after the install's apply.
	RolloutSeconds float64 `json:"rolloutSeconds,omitempty"`
	// CreatedDirs are mount points the lab made on the machine (removed
	// by down when empty).
	CreatedDirs []string `json:"createdDirs,omitempty"`
	// SavedSysctls are the machine-wide values the kubelets change,
	// restored by down.
	SavedSysctls map[string]string `json:"savedSysctls,omitempty"`
}

// Proc is a process the lab started.
type Proc struct {
	Role string `json:"role"` // agent, bird, zebra, bgpd, apiproxy, containerd, kubelet
	Node string `json:"node,omitempty"`
	PID  int    `json:"pid"`
	Bin  string `json:"bin"`
}

// PodRecord is one pod the lab created (`rhizome-lab pods -o json`).
type PodRecord struct {
	Name        string   `json:"name"`
	Namespace   string   `json:"namespace"`
	Node        string   `json:"node"`
	NetNS       string   `json:"netns"`
	ContainerID string   `json:"containerID"`
	Addresses   []string `json:"addresses"`
	// AddSeconds is how long its CNI ADD took.
	AddSeconds float64 `json:"addSeconds,omitempty"`
}

func (l *Lab) statePath() string { return filepath.Join(l.Dir, "state.json") }

// save writes the state atomically.
func (l *Lab) save() error {
	b, err := json.MarshalIndent(l.State, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.statePath())
}

// loadState reads the state of the lab in dir.
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab is running (nothing in %s); start one with rhizome-lab up", dir)
		}
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading %s/state.json: %w", dir, err)
	}
	return &s, nil
}

// alive reports whether the process still runs its recorded binary.
func (p Proc) alive() bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil {
		return false
	}
	want, err := filepath.EvalSymlinks(p.Bin)
	if err != nil {
		want = p.Bin
	}
	if strings.TrimSuffix(exe, " (deleted)") != want {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// stop sends SIGTERM, then SIGKILL after grace, to a process that still
// runs its recorded binary.
func (p Proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(p.PID, syscall.SIGKILL)
}
