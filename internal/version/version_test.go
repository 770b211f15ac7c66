package version_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/internal/version"
)

func TestUnstampedBuildSaysSo(t *testing.T) {
	i := version.Get()
	if i.Version != "v0.0.0-unknown" || i.Revision != "unknown" || i.GoVersion != runtime.Version() {
		t.Fatalf("a test binary (no -X flags) reports %+v", i)
	}
	if got, want := version.Line("x"), "x v0.0.0-unknown (revision unknown, built unknown, "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")"; got != want {
		t.Fatalf("Line = %q, want %q", got, want)
	}
}

// Every binary of cmd/, stamped by hack/version.sh's -X flags as `make
// build` stamps it, reports that version; the CNI plugin's VERSION command
// keeps answering the CNI spec's JSON and nothing else.
func TestBinariesReportTheStampedVersion(t *testing.T) {
	t.Setenv("VERSION", "v1.2.3-test.4")
	t.Setenv("REVISION", "0123456789abcdef0123456789abcdef01234567")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	ld, err := exec.Command("../../hack/version.sh", "ldflags").Output()
	if err != nil {
		t.Fatalf("hack/version.sh ldflags: %v", err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w "+strings.TrimSpace(string(ld)), "-o", bin+"/", "../../cmd/...")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "v1.2.3-test.4 (revision 0123456789abcdef0123456789abcdef01234567, built 2023-11-14T22:13:20Z, " +
		runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	run := func(env []string, name string, args ...string) (string, string, error) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"rhizome-agent", []string{"--version"}, "rhizome-agent " + want + "\n"},
		{"rhizome-cni", []string{"--version"}, "rhizome-cni " + want + "\n"},
		{"rhizome-cni", []string{"version"}, "rhizome-cni " + want + "\n"},
		{"rhizomectl", []string{"--version"}, "rhizomectl " + want + "\n"},
		{"rhizomectl", []string{"version"}, "Client: " + want + "\n"},
		{"rhizome-lab", []string{"--version"}, "rhizome-lab " + want + "\n"},
	} {
		out, errOut, err := run(nil, c.name, c.args...)
		if err != nil || out != c.want {
			t.Errorf("%s %v: %v, stdout %q (stderr %q), want %q", c.name, c.args, err, out, errOut, c.want)
		}
	}

	// CNI: the runtime's VERSION call gets the spec's answer on stdout.
	out, errOut, err := run([]string{"CNI_COMMAND=VERSION"}, "rhizome-cni")
	if err != nil {
		t.Fatalf("CNI_COMMAND=VERSION: %v (stderr %q)", err, errOut)
	}
	var vr struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vr); err != nil || !strings.Contains(strings.Join(vr.SupportedVersions, " "), "1.0.0") || strings.Contains(out, "v1.2.3") {
		t.Errorf("CNI_COMMAND=VERSION printed %q (%v): want only the spec's version JSON", out, err)
	}
	// Run by hand without CNI_COMMAND: the about text, with the build, on stderr.
	out, errOut, _ = run(nil, "rhizome-cni")
	if out != "" || !strings.Contains(errOut, "Rhizome CNI plugin "+want) {
		t.Errorf("rhizome-cni without CNI_COMMAND: stdout %q, stderr %q", out, errOut)
	}
}
