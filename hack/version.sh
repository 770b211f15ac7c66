#!/usr/bin/env bash
# version.sh says which version a build from this checkout is, for the linker
# (-X into internal/version) and for the image's labels. It is the one place
# that turns git state into a version (docs/design/0012):
#
#   VERSION            `git describe --tags --always --dirty --match 'v[0-9]*'`
#                      when a v-tag is reachable (v0.1.0, v0.1.0-3-gabc1234,
#                      ...-dirty); with no tag, v0.0.0-<commits>-g<sha12>
#                      [-dirty], which sorts by commit count and is still a
#                      valid image tag and semver pre-release
#   REVISION           the full commit hash (with -dirty when the tree is)
#   SOURCE_DATE_EPOCH  the commit's time, so a rebuild of a commit has the
#                      same dates, binaries and image digest
#   BUILD_DATE         SOURCE_DATE_EPOCH as RFC 3339 UTC
#
# VERSION, REVISION and SOURCE_DATE_EPOCH already set in the environment win
# (a release script, or a build from a source tarball without .git).
#
#   hack/version.sh           KEY=value lines
#   hack/version.sh ldflags   the -X flags for `go build -ldflags`
set -euo pipefail
cd "$(dirname "$0")/.."

if git rev-parse --git-dir >/dev/null 2>&1; then
  dirty=""
  # Untracked files do not make a build dirty (bin/ and build output are
  # ignored anyway); changes to tracked files do, as with git describe.
  if ! git diff --quiet HEAD -- 2>/dev/null; then dirty="-dirty"; fi
  desc=$(git describe --tags --always --dirty --match 'v[0-9]*' 2>/dev/null || true)
  if [[ ! $desc =~ ^v[0-9] ]]; then
    desc="v0.0.0-$(git rev-list --count HEAD)-g$(git rev-parse --short=12 HEAD)${dirty}"
  fi
  : "${VERSION:=$desc}"
  : "${REVISION:=$(git rev-parse HEAD)${dirty}}"
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
fi
: "${VERSION:=v0.0.0-unknown}"
: "${REVISION:=unknown}"
: "${SOURCE_DATE_EPOCH:=0}"
if [[ ! $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]]; then
  echo "version.sh: SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a number of seconds" >&2
  exit 1
fi
# An image tag allows [A-Za-z0-9_.-], at most 128 characters, no leading . or -.
if [[ ! $VERSION =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  echo "version.sh: VERSION=$VERSION is not usable as an image tag" >&2
  exit 1
fi
BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

case "${1:-}" in
  "")
    printf 'VERSION=%s\nREVISION=%s\nSOURCE_DATE_EPOCH=%s\nBUILD_DATE=%s\n' \
      "$VERSION" "$REVISION" "$SOURCE_DATE_EPOCH" "$BUILD_DATE" ;;
  ldflags)
    pkg=github.com/rhizome-net/rhizome/internal/version
    printf -- '-X %s.Version=%s -X %s.Revision=%s -X %s.BuildDate=%s\n' \
      "$pkg" "$VERSION" "$pkg" "$REVISION" "$pkg" "$BUILD_DATE" ;;
  *)
    echo "usage: $0 [ldflags]" >&2; exit 2 ;;
esac
