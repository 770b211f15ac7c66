package routes

import (
	"context"
	"net"
	"net/netip"
)

// Kernel bundles the seams between the Reconciler and the kernel. New opens
// the real ones (OpenKernel); tests pass fakes (fake.go) to NewWithKernel.
type Kernel struct {
	Table   Table
	Devices Devices
	NAT     NAT
	Sysctls Sysctls
	// Watcher may be nil: drift is then repaired by the periodic resync only.
	Watcher Watcher
	// Close releases the kernel resources (sockets); nil for fakes.
	Close func() error
}

// Devices manages the link-level state routes depend on. Implementations
// only ever create, change or delete the devices named in a DeviceSpec, and
// only neighbour and FDB entries on the VXLAN device.
type Devices interface {
	// Ensure makes the tunnel devices match spec and reports the node's
	// links. On error the returned status still holds what could be found
	// (e.g. the underlay), so routes not needing the broken device go on.
	Ensure(spec DeviceSpec) (DeviceStatus, error)
	// SetVTEPs makes the static neighbour (VTEP address -> MAC) and FDB
	// (MAC -> node address) entries on the VXLAN device exactly vteps.
	SetVTEPs(vteps []VTEP) error
	// Resolve returns how the kernel reaches addr right now (gateway and
	// interface), for next hops that are not on the node's subnet: every
	// next hop of the route it matches, so that an ECMP underlay stays
	// ECMP.
	Resolve(addr netip.Addr) ([]NextHop, error)
}

// DeviceSpec is what the tunnel devices should look like.
type DeviceSpec struct {
	// Underlay names the node's interface; empty = the one holding Address.
	Underlay string
	// Address and Address6 are the node's underlay addresses with their
	// subnets' prefix lengths; an unset Address is read from the interface.
	Address, Address6 netip.Prefix
	// VXLAN is the VXLAN device to have; nil leaves an existing one alone
	// unless RemoveVXLAN is set.
	VXLAN       *VXLANSpec
	RemoveVXLAN bool
	// IPIP configures tunl0; nil leaves it alone (it is the kernel's
	// fallback device, shared with anyone else using ipip: never deleted)
	// but for our released addresses on it (PoolCIDRs).
	IPIP *IPIPSpec
	// PoolCIDRs are the pools' CIDRs. An address of a pool on tunl0 that
	// is not IPIP.Address is a tunnel address the agent gave back (the
	// pool may hand it to a pod, which this node would then take for
	// itself): it is removed. Other addresses on tunl0 are not ours.
	PoolCIDRs []netip.Prefix
}

// VXLANSpec describes the VXLAN device.
type VXLANSpec struct {
	Name    string
	VNI     int
	Port    int
	MAC     net.HardwareAddr
	Address netip.Addr // this node's VTEP address (a /32 on the device)
	MTU     int        // 0 = underlay MTU minus VXLAN overhead
}

// IPIPSpec describes tunl0.
type IPIPSpec struct {
	Address netip.Addr // optional /32 on tunl0
	MTU     int        // 0 = underlay MTU minus IPIP overhead
}

// DeviceStatus is what Devices.Ensure found and made.
type DeviceStatus struct {
	Links        linkState
	UnderlayName string
	UnderlayMTU  int
	Devices      []DeviceInfo
}

// DeviceInfo describes a tunnel device for the agent's RhizomeNode status.
type DeviceInfo struct {
	Name    string
	Type    string // vxlan or ipip
	MTU     int
	Address string
	MAC     string
}

// TunnelMTU is the MTU of a tunnel device over an underlay of underlayMTU:
// override if set, else underlayMTU minus overhead.
func TunnelMTU(underlayMTU, overhead, override int) int {
	if override > 0 {
		return override
	}
	return underlayMTU - overhead
}

// NAT programs natOutgoing. Implementations own exactly one nftables table
// and never touch any other.
type NAT interface {
	// Sync makes the NAT rules match spec; an empty spec removes our table.
	Sync(spec NATSpec) error
}

// NATSpec: traffic from Masquerade prefixes to destinations outside all
// Pools is masqueraded behind the node's address.
type NATSpec struct {
	Masquerade []netip.Prefix
	Pools      []netip.Prefix
}

// Sysctls reads and writes kernel parameters of the node's network
// namespace. Keys are paths below /proc/sys, e.g. net/ipv4/ip_forward
// (slashes, since interface names may contain dots).
type Sysctls interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

// Watcher delivers kernel change notifications.
type Watcher interface {
	// Watch calls fn with batches of events until ctx ends. The subscription
	// exists from the Watcher's creation, so nothing between opening and
	// Watch is missed.
	Watch(ctx context.Context, fn func([]Event)) error
}

// EventKind says what changed.
type EventKind uint8

const (
	// EventRoute is a route added, changed or deleted.
	EventRoute EventKind = iota
	// EventLink is an interface added, changed or deleted.
	EventLink
	// EventNeigh is a neighbour or FDB entry change.
	EventNeigh
	// EventOverflow says notifications were lost: anything may have changed.
	EventOverflow
)

// Event is one kernel notification.
type Event struct {
	Kind    EventKind
	Deleted bool
	// Route events: the route, its table and protocol.
	Route    Route
	Table    uint32
	Protocol uint8
	// Link and neighbour events: the interface.
	LinkIndex int
	LinkName  string
}
