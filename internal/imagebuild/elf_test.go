package imagebuild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// buildHello compiles a tiny static Go program for arch with GoBuild, as
// BuildRhizome compiles the real ones.
func buildHello(t *testing.T, arch string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"hello\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := (GoBuild{Dir: dir, Packages: []string{"."}, Platform: v1.Platform{OS: "linux", Architecture: arch}, OutDir: out}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(out, "hello")
}

func TestCheckStatic(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := os.ReadFile(buildHello(t, arch))
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckStatic(b, arch); err != nil {
			t.Errorf("a static %s Go binary: %v", arch, err)
		}
		other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[arch]
		if err := CheckStatic(b, other); err == nil || !strings.Contains(err.Error(), "ELF machine") {
			t.Errorf("a %s binary checked as %s: err %v, want a wrong machine", arch, other, err)
		}
	}
	// This machine's shell is linked against libc: what an image without a
	// base must never carry.
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(sh, "amd64"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: err %v, want dynamically linked", err)
	}
	if err := CheckStatic([]byte("#!/bin/sh\necho hi\n"), "amd64"); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("a shell script: err %v", err)
	}
	if err := CheckStatic(sh, "riscv64"); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("an architecture we do not build: err %v", err)
	}
}

// The builder refuses to put a dynamically linked binary into the image.
func TestBinaryLayerRefusesDynamicBinaries(t *testing.T) {
	dir := t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rhizome-agent"), sh, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := binaryLayer(dir, []string{"rhizome-agent"}, "amd64", epoch); err == nil || !strings.Contains(err.Error(), "rhizome-agent for amd64: dynamically linked") {
		t.Fatalf("binaryLayer with a dynamic binary: err %v", err)
	}
	if _, err := binaryLayer(dir, []string{"rhizomectl"}, "amd64", epoch); err == nil {
		t.Fatal("binaryLayer with a missing binary: no error")
	}
}

func TestGoBuildRefusesOtherPlatforms(t *testing.T) {
	for _, p := range []v1.Platform{{OS: "windows", Architecture: "amd64"}, {OS: "linux", Architecture: "riscv64"}} {
		if err := (GoBuild{Dir: ".", Packages: []string{"."}, Platform: p, OutDir: t.TempDir()}).Run(context.Background()); err == nil {
			t.Errorf("GoBuild for %s: no error", p.String())
		}
	}
}
