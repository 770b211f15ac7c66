#!/usr/bin/env bash
# controlplane-gomod.sh rewrites test/controlplane/tools/go.mod for a given
# Kubernetes release: it requires k8s.io/kubernetes at that version, replaces
# every staging module that k8s's own go.mod replaces with its published
# v0.x version, pins etcd at the version k8s requires, and tidies.
#   hack/controlplane-gomod.sh v1.37.2
set -euo pipefail
cd "$(dirname "$0")/.."
K8S=${1:?usage: $0 <kubernetes version, e.g. v1.37.2>}
STAGING=v0.${K8S#v1.}
MOD=$(go mod download -json "k8s.io/kubernetes@$K8S" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
ETCD=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$MOD")
DIR=test/controlplane/tools
{
  cat <<HDR
// Module tools pins the Kubernetes binaries that Rhizome's tests run:
// kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and the
// kubelet from k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3. It is its own module so that their large
// dependency graph never leaks into Rhizome's go.mod. Regenerate with
// hack/controlplane-gomod.sh.
module github.com/rhizome-net/rhizome/test/controlplane/tools

go 1.26.0

tool (
	go.etcd.io/etcd/server/v3
	k8s.io/kubernetes/cmd/kube-apiserver
	k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kube-scheduler
	k8s.io/kubernetes/cmd/kubectl
	k8s.io/kubernetes/cmd/kubelet
)

require (
	go.etcd.io/etcd/server/v3 $ETCD
	k8s.io/kubernetes $K8S
)

replace (
HDR
  # Staging modules without a published release (the samples) are left out.
  grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging' "$MOD" | awk '{print $1}' \
    | grep -vE 'sample-cli-plugin|sample-controller' | sort \
    | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING"; done
  echo ")"
} > "$DIR/go.mod"
(cd "$DIR" && GOFLAGS=-mod=mod go mod tidy)
sed -i "s/^const K8sVersion = .*/const K8sVersion = \"$K8S\"/" test/controlplane/build.go
echo "tools module now pins kubernetes $K8S (staging $STAGING), etcd $ETCD"
