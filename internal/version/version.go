// Package version says which build of Rhizome is running. `make build` and
// `make image` set its variables with the linker (-X, from hack/version.sh:
// git describe, the commit, the commit's time), so every binary and the
// agent's rhizome_build_info metric report the same thing, and a rebuild of
// the same commit is byte for byte the same (no wall-clock time anywhere).
package version

import (
	"fmt"
	"runtime"
)

// Set by the linker; the defaults are what a plain `go build` or `go test`
// reports, so that an unstamped binary says so rather than guessing.
var (
	// Version is the release this build belongs to, as git describes it
	// (v0.1.0, v0.1.0-3-gabc1234, v0.0.0-127-gd1b509b60ae8-dirty).
	Version = "v0.0.0-unknown"
	// Revision is the full commit hash, "-dirty" appended when the tree had
	// changes to tracked files.
	Revision = "unknown"
	// BuildDate is the commit's time (SOURCE_DATE_EPOCH) in RFC 3339 UTC,
	// not the time of the build.
	BuildDate = "unknown"
)

// Info is one build's identity.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns this binary's build identity.
func Get() Info {
	return Info{
		Version:   Version,
		Revision:  Revision,
		BuildDate: BuildDate,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// String is the one-line form every binary prints for --version:
// "v0.1.0 (revision 0123abc..., built 2026-12-04T23:03:21Z, go1.26.1 linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, built %s, %s %s)", i.Version, i.Revision, i.BuildDate, i.GoVersion, i.Platform)
}

// Line is what `<program> --version` prints: the program's name, then
// String.
func Line(program string) string {
	return program + " " + Get().String()
}
