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

func TestUninstall(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "opt/cni/bin"), filepath.Join(dir, "etc/cni/net.d")
	if err := Install(InstallOptions{BinDir: bin, ConfDir: conf, Conflist: ConflistOptions{Chain: true}}); err != nil {
		t.Fatal(err)
	}
	// Not ours: another plugin's configuration and binaries, kept.
	others := []string{filepath.Join(conf, "05-other.conflist"), filepath.Join(bin, "portmap"), filepath.Join(bin, "rhizome-old")}
	for _, p := range others {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An install interrupted between its temporary file and the rename.
	stale := filepath.Join(conf, ".rhizome-install-123")
	if err := os.WriteFile(stale, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(bin, "rhizome"), filepath.Join(conf, ConflistName), stale}
	found, err := Uninstall(bin, conf, true)
	if err != nil || len(found) != 3 {
		t.Fatalf("dry run: %v %v, want %v", found, err, want)
	}
	if _, err := os.Stat(filepath.Join(conf, ConflistName)); err != nil {
		t.Fatalf("a dry run removed the conflist: %v", err)
	}
	removed, err := Uninstall(bin, conf, false)
	if err != nil || len(removed) != 3 {
		t.Fatalf("uninstall: %v %v, want %v", removed, err, want)
	}
	for _, p := range want {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	for _, p := range others {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s, not ours, is gone: %v", p, err)
		}
	}
	if again, err := Uninstall(bin, conf, false); err != nil || len(again) != 0 {
		t.Errorf("a second uninstall: %v %v", again, err)
	}
	// Directories that do not exist (a node without CNI directories).
	if got, err := Uninstall(filepath.Join(dir, "none"), filepath.Join(dir, "none2"), false); err != nil || len(got) != 0 {
		t.Errorf("without the directories: %v %v", got, err)
	}
}
