# Rhizome's build and test entry points. `make help` lists them.
#
# `make test` is what CI runs (.ci/run): it needs root, installs what it needs
# (Debian packages, the control-plane binaries) and runs every suite.

SHELL      := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
GO         ?= go
BIN        := $(CURDIR)/bin
BINARIES   := $(notdir $(wildcard cmd/*))
# Binaries are static (no cgo: they run on any node, the CNI plugin on the
# host) and without the symbol table and DWARF (stack traces keep function
# names and lines); docs/design/0008 measured what this saves in memory.
# hack/version.sh stamps them with the version git describes, the commit and
# the commit's time (internal/version; docs/design/0012).
VERSION_LDFLAGS = $(shell ./hack/version.sh ldflags)
GOFLAGS_BUILD ?= -trimpath -buildvcs=false -ldflags="-s -w $(VERSION_LDFLAGS)"
# Where `make image`, `image-pause` and `image-busybox` write (one directory
# each: oci/, NAME.oci.tar, NAME-linux-ARCH.docker.tar).
IMAGE_OUT  ?= $(BIN)/image
export GOTOOLCHAIN := local
# Test tags: integration = needs the local control plane; privileged = needs
# root for network namespaces.
TEST_TAGS  := integration,privileged
LINT_TAGS  := integration,privileged,e2e,image,bench
TEST_TIMEOUT ?= 30m

.DEFAULT_GOAL := help

##@ Build

.PHONY: build
build: ## Build every binary (cmd/*) into bin/, and rhizomectl again as the kubectl plugin bin/kubectl-rhizome
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))
	@# kubectl runs kubectl-rhizome for `kubectl rhizome ...`, and completes
	@# it through kubectl_complete-rhizome (kubectl 1.26+).
	ln -f $(BIN)/rhizomectl $(BIN)/kubectl-rhizome
	printf '#!/bin/sh\nexec kubectl-rhizome __complete "$$@"\n' > $(BIN)/kubectl_complete-rhizome
	chmod +x $(BIN)/kubectl_complete-rhizome

.PHONY: image
image: ## Rhizome's image for linux/amd64+arm64, offline and reproducible, into bin/image/rhizome (IMAGE=ref PLATFORMS=...); last line REF@sha256:...
	$(GO) run ./hack/image rhizome --out $(IMAGE_OUT)/rhizome $(if $(IMAGE),--ref $(IMAGE)) $(if $(PLATFORMS),--platforms $(PLATFORMS))

.PHONY: image-pause
image-pause: ## The pod sandbox image (Kubernetes' pause.c, static, amd64) for the kubelet lab, into bin/image/pause; last line REF@sha256:...
	$(GO) run ./hack/image pause --out $(IMAGE_OUT)/pause $(if $(IMAGE),--ref $(IMAGE))

.PHONY: image-busybox
image-busybox: ## A test workload image (Debian's static busybox: sh, sleep, ping, ip, nc) into bin/image/busybox; last line REF@sha256:...
	$(GO) run ./hack/image busybox --out $(IMAGE_OUT)/busybox $(if $(IMAGE),--ref $(IMAGE))

.PHONY: generate
generate: ## Regenerate deepcopy, CRD YAML and the typed client from crds/v1alpha1
	./hack/generate.sh

.PHONY: verify-generated
verify-generated: ## Fail if `make generate` changes the tree (stale generated files)
	./hack/verify-generated.sh

.PHONY: lint
lint: ## gofmt, go vet (all build tags), staticcheck, and third_party/gobgp = upstream + its patch
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	./hack/gobgp-fork.sh --verify
	$(GO) vet -tags $(LINT_TAGS) ./...
	@# The generated client is left to its generator (it uses deprecated
	@# client-go fields that code-generator itself still emits).
	$(GO) tool -modfile=hack/tools/go.mod staticcheck -tags $(LINT_TAGS) $$($(GO) list ./... | grep -v /crds/client/)
	$(MAKE) --no-print-directory lint-monitoring

MONITORING := $(CURDIR)/deploy/components/monitoring
.PHONY: lint-monitoring
lint-monitoring: ## Validate the monitoring component: alert rules with Prometheus' rule parser (as promtool check rules), objects against the Prometheus Operator's types, dashboard queries parse
	$(GO) -C hack/promcheck run . rules $(MONITORING)/prometheusrule.yaml
	$(GO) -C hack/promcheck run . objects $(MONITORING)/servicemonitor.yaml $(MONITORING)/prometheusrule.yaml
	$(GO) -C hack/promcheck run . selectors $(MONITORING)/prometheusrule.yaml $(MONITORING)/dashboards/rhizome.json > /dev/null

##@ Local control plane

.PHONY: controlplane
controlplane: build ## Build (or reuse from the cache) kube-apiserver, etcd and kubectl
	$(BIN)/rhizome-lab controlplane build

.PHONY: kubelet-binaries
kubelet-binaries: build ## Also build (or reuse) kube-controller-manager, kube-scheduler, the kubelet and containerd (rhizome-lab up --kubelet)
	$(BIN)/rhizome-lab controlplane build --kubelet >/dev/null

.PHONY: cluster-up
cluster-up: controlplane ## Start kube-apiserver + etcd on 127.0.0.1 with the CRDs; prints export KUBECONFIG=...
	$(BIN)/rhizome-lab controlplane up

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its files
	@if [ -x $(BIN)/rhizome-lab ]; then $(BIN)/rhizome-lab controlplane down; fi

##@ Demo

.PHONY: demo
demo: deps controlplane ## A 3-node, 2-rack cluster with BIRD ToRs, VXLAN, pods; ping matrix and status
	./hack/demo.sh

.PHONY: demo-down
demo-down: ## Remove everything the demo made
	@if [ -x $(BIN)/rhizome-lab ]; then $(BIN)/rhizome-lab down; fi

##@ Test

.PHONY: deps
deps: ## Install the Debian packages the tests and the lab use (root)
	./hack/install-deps.sh

.PHONY: test
test: deps verify-generated lint controlplane test-unit fuzz test-image test-integration test-ipip-vm e2e ## Everything CI runs (root): lint, unit, fuzz, image reproducibility, integration, netns, IPIP VM, e2e
	@echo "make test: all suites passed"

.PHONY: test-unit
test-unit: ## Unit tests (no root, no control plane)
	$(GO) test -count=1 ./...

# Fuzz targets: the decoders of peer input (BFD packets, BGP UPDATEs) and
# what turns objects into desired state (blocks and pools, BGP topology).
# Each runs a fixed number of inputs (about 8 s on this machine's 2 cores)
# on top of its kept corpus (the package's testdata/fuzz, which plain
# `go test` replays). A count, not a duration: Go 1.26's fuzzing
# coordinator can report its own -fuzztime deadline as a failure
# ("context deadline exceeded", no failing input; golang/go#75804), which
# failed a CI run; a count never arms that deadline. FUZZTIME=30s (or
# 1000000x) overrides every target's budget.
FUZZ_TARGETS := ./bfd:FuzzDecode:500000x ./bgp:FuzzDecodeUpdate:40000x ./ipam/store:FuzzBlocks:100000x ./bgp/topology:FuzzCompute:40000x
FUZZTIME ?=
.PHONY: fuzz
fuzz: ## Run each fuzz target (BFD and BGP decoders, blocks/pools, BGP topology) for a fixed count of inputs (~8 s each; FUZZTIME overrides) on its kept corpus
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$${rest#*:}; \
	  [ -n "$(FUZZTIME)" ] && n="$(FUZZTIME)"; \
	  echo "fuzz: $$name in $$pkg for $$n"; \
	  $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime "$$n" "$$pkg" || exit 1; \
	done

.PHONY: test-image
test-image: ## make image, image-pause, image-busybox each twice: same digest and bytes; contents, labels, static binaries, versions (~1 min warm)
	$(GO) test -count=1 -timeout 30m -tags image -v -run 'TestMakeImage' ./internal/imagebuild/

.PHONY: test-integration
test-integration: controlplane ## Tests against the local control plane and in network namespaces (root)
	KUBEBUILDER_ASSETS=$$($(BIN)/rhizome-lab controlplane build 2>/dev/null) \
	  $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -tags $(TEST_TAGS) ./...

.PHONY: test-ipip-vm
test-ipip-vm: deps ## IPIP data path in a VM: Debian's kernel (it has ipip) under qemu, KVM or TCG (root)
	./test/ipipvm/run.sh

.PHONY: e2e
e2e: deps build controlplane kubelet-binaries image ## End-to-end and fault scenarios on whole lab clusters, kubelet labs included (root; ~20 min)
	$(GO) test -count=1 -timeout 45m -tags e2e ./test/e2e/

##@ Benchmarks

N ?= 10000,100000
REPS ?= 3
.PHONY: bench-routes
bench-routes: deps ## Route install/withdraw: BIRD, FRR, ip -batch, batched netlink, Rhizome (N=10000,100000 REPS=3; root); results and chart in docs/bench
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/routebench ./test/bench/cmd/routebench
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/rhizome-bench-receiver ./test/bench/cmd/rhizome-bench-receiver
	$(BIN)/routebench -n $(N) -reps $(REPS) -json $(CURDIR)/docs/bench/routes.json -svg $(CURDIR)/docs/bench/routes.svg

.PHONY: bench-cni
bench-cni: deps build controlplane ## CNI ADD/DEL latency p50/p99 and pods/s on one node, real agent and API server (PODS=100; root); appended to docs/bench
	RHIZOME_BENCH_OUT=$(CURDIR)/docs/bench RHIZOME_BENCH_PODS=$(or $(PODS),100) $(GO) test -count=1 -timeout 30m -tags e2e -run '^$$' -bench BenchmarkCNIAddDel -benchtime 1x ./test/e2e/

.PHONY: bench-bgp
bench-bgp: deps build controlplane ## Block propagation in a 10-node mesh, p50/p99 over 50 trials, idle agent RSS (root); appended to docs/bench
	RHIZOME_BENCH_OUT=$(CURDIR)/docs/bench $(GO) test -count=1 -timeout 30m -tags e2e -run '^$$' -bench BenchmarkBlockPropagation -benchtime 1x ./test/e2e/

.PHONY: bench-scale
bench-scale: deps build controlplane ## 30-node mesh and 100 nodes with 2 route reflectors: convergence and RSS, results and chart in docs/bench (root)
	RHIZOME_SCALE_OUT=$(CURDIR)/docs/bench $(GO) test -count=1 -timeout 90m -tags e2e -run '^$$' -bench BenchmarkScale -benchtime 1x ./test/e2e/

.PHONY: bench-failover
bench-failover: deps build controlplane ## Link cut to routes withdrawn at the ToR and the other nodes, BFD off/300x3/100x3 (REPS=3), and BFD's CPU per session at 100 sessions (root)
	@mkdir -p $(BIN)
	RHIZOME_BENCH_REPS=$(REPS) $(GO) test -count=1 -timeout 60m -tags e2e -run '^$$' -bench '^BenchmarkFailover$$' -benchtime 1x ./test/e2e/ 2>&1 | tee $(BIN)/bench-failover.log | grep -E '^bfd='
	$(GO) test -count=1 -timeout 20m -tags privileged -run '^$$' -bench '^BenchmarkSessionsCPU$$' -benchtime 1x ./bfd/ 2>&1 | tee $(BIN)/bench-bfd-cpu.log | grep -E '^bfd_cpu='

# bench-rr's sizes: N given on the command line, else its own default
# (the N above is bench-routes' route counts).
RR_N = $(if $(filter command line,$(origin N)),$(N),500,1000,2000,5000)

.PHONY: bench-rr
bench-rr: deps build controlplane ## Route reflectors at scale: Rhizome vs BIRD as reflector for N clients (N=500,1000,2000,5000 REPS=3; RR_ARGS=-client adds a client agent's RSS and passes; root); results and chart in docs/bench
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/rrbench ./test/bench/cmd/rrbench
	$(BIN)/rrbench -n $(RR_N) -reps $(REPS) -json $(CURDIR)/docs/bench/rr.json -svg $(CURDIR)/docs/bench/rr.svg $(RR_ARGS)

.PHONY: bench-ipam
bench-ipam: controlplane ## IPAM allocations/s, API writes and conflicts per allocation (1 and 8 nodes)
	KUBEBUILDER_ASSETS=$$($(BIN)/rhizome-lab controlplane build 2>/dev/null) \
	  $(GO) test -count=1 -timeout 30m -tags integration -run '^$$' -bench IPAM -benchtime 2000x ./ipam/

.PHONY: bench-charts
bench-charts: ## Re-render docs/bench/*.svg from the benches' JSON results (no benchmark runs)
	$(GO) run ./test/bench/cmd/benchcharts -dir docs/bench

##@ Help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
