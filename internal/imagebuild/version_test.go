package imagebuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gitRepo makes a repository with hack/version.sh (this repository's) and
// returns a function that runs git in it.
func gitRepo(t *testing.T) (string, func(args ...string) string) {
	t.Helper()
	dir := t.TempDir()
	script, err := os.ReadFile("../../hack/version.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "hack"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hack", "version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
			"GIT_AUTHOR_DATE=@1700000000 +0000", "GIT_COMMITTER_DATE=@1700000000 +0000",
			"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	return dir, git
}

// hack/version.sh's versions through a repository's life: no tag, a tag,
// commits after it, uncommitted changes; the environment overrides it and
// bad overrides are refused.
func TestVersionFromGit(t *testing.T) {
	// The environment must not leak into the cases that read git.
	for _, k := range []string{"VERSION", "REVISION", "SOURCE_DATE_EPOCH"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	ctx := context.Background()
	dir, git := gitRepo(t)
	commit := func(msg string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "file"), []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "-A")
		git("commit", "-q", "-m", msg)
	}
	commit("one")
	commit("two")
	sha := git("rev-parse", "HEAD")

	v, err := ReadVersion(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := "v0.0.0-2-g" + sha[:12]; v.Version != want || v.Revision != sha {
		t.Errorf("untagged: %+v, want version %s, revision %s", v, want, sha)
	}
	if !v.Epoch.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("epoch %v, want the commit's time", v.Epoch)
	}
	wantLD := "-X github.com/rhizome-net/rhizome/internal/version.Version=" + v.Version +
		" -X github.com/rhizome-net/rhizome/internal/version.Revision=" + sha +
		" -X github.com/rhizome-net/rhizome/internal/version.BuildDate=2023-11-14T22:13:20Z"
	if v.LDFlags != wantLD {
		t.Errorf("ldflags\n%s\nwant\n%s", v.LDFlags, wantLD)
	}

	git("tag", "not-a-version") // only v-tags count
	git("tag", "-a", "-m", "release", "v1.2.0")
	if v, _ := ReadVersion(ctx, dir); v.Version != "v1.2.0" {
		t.Errorf("on tag v1.2.0: version %s", v.Version)
	}
	commit("three")
	v, _ = ReadVersion(ctx, dir)
	if !regexp.MustCompile(`^v1\.2\.0-1-g[0-9a-f]{7,}$`).MatchString(v.Version) {
		t.Errorf("a commit after v1.2.0: version %s", v.Version)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, _ = ReadVersion(ctx, dir)
	if !strings.HasSuffix(v.Version, "-dirty") || !strings.HasSuffix(v.Revision, "-dirty") {
		t.Errorf("uncommitted changes: %+v, want -dirty", v)
	}
	// An untracked file is not a change to the build's sources.
	git("checkout", "-q", "--", "file")
	if err := os.WriteFile(filepath.Join(dir, "untracked"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, _ := ReadVersion(ctx, dir); strings.Contains(v.Version, "dirty") {
		t.Errorf("an untracked file made the version %s", v.Version)
	}

	t.Setenv("VERSION", "v9.9.9-rc.1")
	t.Setenv("SOURCE_DATE_EPOCH", "1")
	v, err = ReadVersion(ctx, dir)
	if err != nil || v.Version != "v9.9.9-rc.1" || v.Epoch.Unix() != 1 {
		t.Errorf("environment overrides: %+v %v", v, err)
	}
	for _, bad := range []struct{ k, v string }{{"VERSION", "v1/evil"}, {"VERSION", "-v1"}, {"SOURCE_DATE_EPOCH", "yesterday"}} {
		t.Setenv("VERSION", "v1.0.0")
		t.Setenv("SOURCE_DATE_EPOCH", "1")
		t.Setenv(bad.k, bad.v)
		if _, err := ReadVersion(ctx, dir); err == nil {
			t.Errorf("%s=%q: no error", bad.k, bad.v)
		}
	}
}

// Outside a git checkout (a source tarball) the script still answers.
func TestVersionWithoutGit(t *testing.T) {
	for _, k := range []string{"VERSION", "REVISION", "SOURCE_DATE_EPOCH"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir, _ := gitRepo(t)
	if err := os.RemoveAll(filepath.Join(dir, ".git")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(dir))
	v, err := ReadVersion(context.Background(), dir)
	if err != nil || v.Version != "v0.0.0-unknown" || v.Revision != "unknown" || v.Epoch.Unix() != 0 {
		t.Errorf("without git: %+v %v", v, err)
	}
}
