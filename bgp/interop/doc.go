// Package interop tests Rhizome's BGP stack against real routers: BIRD 2
// and FRR run in network namespaces as top-of-rack routers, and the node
// side — topology, reconciler, embedded GoBGP, RIB — runs as a helper
// process inside another namespace (this package's test binary started
// again with RHIZOME_BGP_HELPER_DIR set), because a Go process cannot move
// GoBGP's sockets between namespaces. The tests need root and carry the
// build tag privileged.
package interop
