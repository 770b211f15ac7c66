package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBirdConfigParses has BIRD itself parse the reflector configuration
// (bird -p: parse and exit), where BIRD is installed.
func TestBirdConfigParses(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird is not installed (make deps installs it)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	for _, client := range []bool{false, true} {
		if err := os.WriteFile(conf, []byte(birdConfig(dir, 25, client)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bird", "-p", "-c", conf).CombinedOutput(); err != nil {
			t.Fatalf("bird -p (client agent %v): %v\n%s", client, err, out)
		}
	}
}
