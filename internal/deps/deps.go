//go:build tools

// Package deps lists modules that parts of Rhizome under construction will
// import, so that `go mod tidy` keeps them pinned while several parts are
// developed at once. Remove an entry once a real package imports it.
package deps

import (
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/google/nftables"
	_ "github.com/osrg/gobgp/v3/pkg/server"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
