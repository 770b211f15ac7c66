#!/usr/bin/env bash
# Rebuilds third_party/gobgp, Rhizome's patched copy of GoBGP, from the
# upstream module and third_party/gobgp.patch; with --verify, fails if the
# committed copy differs from that. The copy holds only the packages the
# agent imports (GoBGP's tests, commands and tools are left out) and
# GoBGP's LICENSE. docs/design/0010-gobgp-fork.md says why it exists.
#
#   hack/gobgp-fork.sh            rewrite third_party/gobgp
#   hack/gobgp-fork.sh --verify   compare only
#   hack/gobgp-fork.sh --diff     regenerate third_party/gobgp.patch from the copy
set -euo pipefail
cd "$(dirname "$0")/.."

version=v3.37.0
module=github.com/osrg/gobgp/v3
pkgs=(api pkg/log pkg/packet/bgp internal/pkg/version pkg/apiutil pkg/packet/bmp
	pkg/packet/rtr pkg/zebra pkg/config/oc internal/pkg/table pkg/packet/mrt pkg/server)
dest=third_party/gobgp
patchfile=third_party/gobgp.patch

src=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
	echo "gobgp-fork: could not download $module@$version" >&2
	exit 1
fi

# upstream copies the pruned upstream tree into $1.
upstream() {
	local out=$1 p f
	mkdir -p "$out"
	cp "$src/LICENSE" "$src/go.mod" "$src/go.sum" "$out/"
	for p in "${pkgs[@]}"; do
		mkdir -p "$out/$p"
		for f in "$src/$p"/*.go; do
			case "$f" in *_test.go) continue ;; esac
			cp "$f" "$out/$p/"
		done
	done
	chmod -R u+w "$out"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case "${1:-}" in
--diff)
	upstream "$tmp/a"
	# diff exits 1 when the trees differ, which is the point here.
	(cd "$tmp" && cp -r "$OLDPWD/$dest" b && rm -f b/RHIZOME.md && diff -ruN a b) | sed -E 's/^((---|\+\+\+) [^\t]*)\t.*/\1/' >"$patchfile" || true
	echo "gobgp-fork: wrote $patchfile ($(grep -c '^+++ ' "$patchfile") files)"
	;;
--verify)
	upstream "$tmp/want"
	(cd "$tmp/want" && patch -s -p1 <"$OLDPWD/$patchfile")
	cp "$dest/RHIZOME.md" "$tmp/want/"
	if ! diff -r "$tmp/want" "$dest" >"$tmp/out"; then
		cat "$tmp/out" >&2
		echo "gobgp-fork: $dest is not upstream $version plus $patchfile; run hack/gobgp-fork.sh --diff after editing the copy" >&2
		exit 1
	fi
	echo "gobgp-fork: $dest is upstream $version plus $patchfile"
	;;
"")
	upstream "$tmp/new"
	if [ -s "$patchfile" ]; then
		(cd "$tmp/new" && patch -s -p1 <"$OLDPWD/$patchfile")
	fi
	[ -f "$dest/RHIZOME.md" ] && cp "$dest/RHIZOME.md" "$tmp/new/"
	rm -rf "$dest"
	mkdir -p "$(dirname "$dest")"
	cp -r "$tmp/new" "$dest"
	echo "gobgp-fork: wrote $dest"
	;;
*)
	echo "usage: $0 [--verify|--diff]" >&2
	exit 2
	;;
esac
