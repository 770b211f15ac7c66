#!/usr/bin/env bash
# verify-generated.sh fails when the generated files in the tree differ from
# what `make generate` produces now, naming the stale files.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot() { find crds agent/agentapi docs/reference.md -type f | LC_ALL=C sort | xargs sha256sum; }
before=$(snapshot)
./hack/generate.sh >/dev/null
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "generated files are stale; run make generate and commit:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "verify-generated: generated files are up to date"
