package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "opt/cni/bin"), filepath.Join(dir, "etc/cni/net.d")
	o := InstallOptions{BinDir: bin, ConfDir: conf, Conflist: ConflistOptions{Chain: true, AgentSocket: "/var/run/rhizome/agent.sock"}}
	for range 2 { // installing twice (a restarted init container) is fine
		if err := Install(o); err != nil {
			t.Fatal(err)
		}
	}
	self, _ := os.Executable()
	want, _ := os.Stat(self)
	got, err := os.Stat(filepath.Join(bin, "rhizome"))
	if err != nil || got.Size() != want.Size() || got.Mode().Perm() != 0o755 {
		t.Fatalf("installed plugin: %v %v", got, err)
	}
	b, err := os.ReadFile(filepath.Join(conf, ConflistName))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Name != "rhizome" || len(doc.Plugins) != 3 || doc.Plugins[0]["type"] != "rhizome" {
		t.Fatalf("conflist: %v %s", err, b)
	}
	left, _ := filepath.Glob(filepath.Join(conf, ".rhizome-install-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
