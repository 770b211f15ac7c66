package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// GoBuild is one `go build` of main packages for one platform: static
// (CGO_ENABLED=0), without paths of this machine (-trimpath), without VCS
// stamps (-buildvcs=false: the version comes through LDFlags), without the
// symbol table and DWARF (-s -w, as `make build`), and with every
// environment setting that changes the output pinned, so that the same
// sources and toolchain give the same bytes on any machine.
type GoBuild struct {
	// Dir is the module's directory (go build -C).
	Dir string
	// Packages are main packages, by path ("./cmd/rhizome-agent") or import
	// path ("github.com/osrg/gobgp/v3/cmd/gobgp").
	Packages []string
	// Platform is linux/amd64 or linux/arm64.
	Platform v1.Platform
	// LDFlags are added after -s -w (the version's -X flags).
	LDFlags string
	// OutDir receives one binary per package, named after its last element.
	OutDir string
}

// Run builds b.
func (b GoBuild) Run(ctx context.Context) error {
	if b.Platform.OS != "linux" {
		return fmt.Errorf("platform %s: only linux is built", b.Platform.String())
	}
	if _, ok := elfMachines[b.Platform.Architecture]; !ok {
		return fmt.Errorf("platform %s: want linux/amd64 or linux/arm64", b.Platform.String())
	}
	if err := os.MkdirAll(b.OutDir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-C", b.Dir, "-trimpath", "-buildvcs=false",
		"-ldflags=" + strings.TrimSpace("-s -w "+b.LDFlags), "-o", b.OutDir + string(filepath.Separator)}
	cmd := exec.CommandContext(ctx, "go", append(args, b.Packages...)...)
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS="+b.Platform.OS, "GOARCH="+b.Platform.Architecture,
		// The baseline instruction sets, whatever this shell exports.
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=",
		// go.sum checks every module; nothing edits go.mod during a build;
		// the toolchain is this machine's (no download named by go.mod).
		"GOFLAGS=-mod=readonly", "GOTOOLCHAIN=local",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", strings.Join(b.Packages, " "), b.Platform.String(), err, out.Bytes())
	}
	return nil
}

// BuildVersion is what hack/version.sh says about this checkout.
type BuildVersion struct {
	Version  string
	Revision string
	// Epoch is SOURCE_DATE_EPOCH: the commit's time, every date in the
	// image.
	Epoch time.Time
	// LDFlags are the -X flags that stamp internal/version.
	LDFlags string
}

// ReadVersion runs repoDir/hack/version.sh, the one place that turns git
// state (or VERSION, REVISION, SOURCE_DATE_EPOCH in the environment) into a
// version; `make build` uses the same script.
func ReadVersion(ctx context.Context, repoDir string) (BuildVersion, error) {
	script := filepath.Join(repoDir, "hack", "version.sh")
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, script, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w: %s", script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), nil
	}
	kv, err := run()
	if err != nil {
		return BuildVersion{}, err
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(kv))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	epoch, err := strconv.ParseInt(vars["SOURCE_DATE_EPOCH"], 10, 64)
	if err != nil || vars["VERSION"] == "" || vars["REVISION"] == "" {
		return BuildVersion{}, fmt.Errorf("%s printed %q: want VERSION, REVISION and SOURCE_DATE_EPOCH", script, kv)
	}
	ld, err := run("ldflags")
	if err != nil {
		return BuildVersion{}, err
	}
	return BuildVersion{
		Version:  vars["VERSION"],
		Revision: vars["REVISION"],
		Epoch:    time.Unix(epoch, 0).UTC(),
		LDFlags:  strings.TrimSpace(ld),
	}, nil
}
