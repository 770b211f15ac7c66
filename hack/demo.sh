#!/usr/bin/env bash
# demo.sh shows Rhizome's API on the local control plane: it applies the
# example IP pools, BGP configuration and peers, and lists every kind with
# kubectl. `make demo` runs it after `make cluster-up`.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=./bin/rhizome-lab
eval "$($LAB controlplane env)"
KUBECTL="$($LAB controlplane build 2>/dev/null)/kubectl"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Rhizome's CRDs are installed"
$KUBECTL get crd -o custom-columns=NAME:.metadata.name,KIND:.spec.names.kind,SCOPE:.spec.scope | grep -E 'NAME|rhizome.dev'

step "Applying deploy/examples (IP pools, BGP configuration, BGP peers)"
$KUBECTL apply -f deploy/examples/
$KUBECTL apply -f deploy/examples/agent-written/

step "An invalid pool is rejected with a message that says what to fix"
printf 'apiVersion: rhizome.dev/v1alpha1\nkind: IPPool\nmetadata: {name: broken}\nspec: {cidr: 10.244.1.0/16, ipipMode: Always, vxlanMode: Always}\n' \
  | $KUBECTL apply -f - 2>&1 | sed 's/^/  /' || true

for kind in ippools ipamblocks bgpconfigurations bgppeers rhizomenodes; do
  step "kubectl get $kind"
  $KUBECTL get "$kind"
done

cat <<HINT

Explore:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL explain ippool.spec
  $KUBECTL get ippools -o yaml
Remove everything with: make demo-down
HINT
