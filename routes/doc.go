// Package routes is Rhizome's kernel route programmer. A Reconciler keeps
// the node's routes, tunnel devices (vxlan.rhizome, tunl0), VXLAN
// neighbour/FDB entries, forwarding sysctls and natOutgoing rules equal to
// the desired state the agent hands it: the node's own blocks (blackholes,
// plus host routes for addresses lent to other nodes), the remote routes
// learned over BGP (direct, IPIP or VXLAN per IP pool, CrossSubnet, ECMP)
// and the other nodes' VTEPs.
//
// Ownership is by routing protocol number (default 114) and table: every
// kernel request names them, so the kernel itself keeps us from listing,
// overwriting or deleting anyone else's route. On start, routes already
// carrying our protocol are adopted, not flushed; the stale ones go only
// after SetConverged. Stopping leaves everything in place.
//
// The kernel is reached through small seams (Table, Devices, NAT, Sysctls,
// Watcher) with stateful fakes in fake.go. The real Table writes routes in
// batches over one rtnetlink socket (rtnl.go), which is what makes
// installing 100k BGP routes about as fast as BIRD: see
// docs/design/0002-routes.md and README.md in this directory.
package routes
