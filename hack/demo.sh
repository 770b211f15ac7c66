#!/usr/bin/env bash
# demo.sh is `make demo`: a whole Rhizome cluster on this machine — 3 nodes in
# 2 racks behind BIRD top-of-rack routers, VXLAN between racks (CrossSubnet),
# 2 pods per node — then a pod-to-pod ping matrix and every node's status.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=./bin/rhizome-lab
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the lab"
$LAB up --nodes 3 --racks 2 --tor bird --mode mesh --encap vxlan --pods 2

step "Pod-to-pod ping matrix"
$LAB matrix

step "Node status (rhizomectl status in each node, BIRD on each ToR)"
$LAB status

KUBECTL="$($LAB controlplane build 2>/dev/null)/kubectl"
cat <<HINT

Explore:
  eval "\$($LAB env)"; $KUBECTL get ippools,ipamblocks,rhizomenodes
  $LAB exec node-1 -- ip route show proto 114     # routes the agent programs
  $LAB exec node-1-pod-1 -- ping -c3 10.0.2.10    # a pod reaching a node in the other rack
  $LAB exec node-1 -- gobgp neighbor               # GoBGP's own CLI against the agent
  $LAB pods -o json
Remove everything with: make demo-down
HINT
