// Package pools turns the IPAM custom resources that operators write (IPPool,
// IPAMConfiguration) into validated, typed values. It is a pure converter: the
// allocator and the controllers never read a raw IPPool, so every rule about
// which pool may be used (valid, enabled, not being deleted, selecting the
// node, not overlapping an older pool) lives here, in one tested place.
package pools

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
)

// Pool is a validated IPPool.
type Pool struct {
	Name   string
	Layout blockmath.Layout
	// Selector chooses the nodes that may claim blocks; never nil.
	Selector labels.Selector
	// Disabled is spec.disabled: no new allocations, existing ones stay.
	Disabled bool
	// Deleting is set once the pool has a deletionTimestamp: it is treated
	// as disabled until its finalizer is removed.
	Deleting         bool
	NATOutgoing      bool
	DisableBGPExport bool
	IPIPMode         v1alpha1.EncapMode
	VXLANMode        v1alpha1.EncapMode
	created          time.Time
}

// CIDR returns the pool's range.
func (p Pool) CIDR() netip.Prefix { return p.Layout.Pool() }

// Family returns 4 or 6.
func (p Pool) Family() int {
	if p.CIDR().Addr().Is4() {
		return 4
	}
	return 6
}

// Allocatable reports whether new addresses may come from the pool.
func (p Pool) Allocatable() bool { return !p.Disabled && !p.Deleting }

// Selects reports whether the pool's nodeSelector matches a node's labels.
func (p Pool) Selects(node labels.Labels) bool { return p.Selector.Matches(node) }

// Set is every IPPool of the cluster, converted: the valid pools and, for the
// others, why the agents ignore them.
type Set struct {
	// pools are sorted by family (IPv4 first), then address.
	pools []Pool
	// Invalid maps a pool name to the reason it is ignored.
	Invalid map[string]error
}

// From converts IPPools. A pool whose spec cannot be used, or whose cidr
// overlaps a pool created earlier (ties broken by name), is left out and
// listed in Invalid: every agent makes the same choice, so two pools can never
// hand out the same address.
func From(in []*v1alpha1.IPPool) Set {
	s := Set{Invalid: map[string]error{}}
	var cands []Pool
	for _, ip := range in {
		p, err := convert(ip)
		if err != nil {
			s.Invalid[ip.Name] = err
			continue
		}
		cands = append(cands, p)
	}
	slices.SortFunc(cands, func(a, b Pool) int {
		return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range cands {
		if i := slices.IndexFunc(s.pools, func(q Pool) bool { return q.CIDR().Overlaps(p.CIDR()) }); i >= 0 {
			q := s.pools[i]
			s.Invalid[p.Name] = fmt.Errorf("cidr %v overlaps pool %s (%v), which is older; the agents ignore this pool: change its cidr or delete it", p.CIDR(), q.Name, q.CIDR())
			continue
		}
		s.pools = append(s.pools, p)
	}
	slices.SortFunc(s.pools, func(a, b Pool) int {
		return cmp.Or(cmp.Compare(a.Family(), b.Family()), a.CIDR().Addr().Compare(b.CIDR().Addr()))
	})
	return s
}

func convert(ip *v1alpha1.IPPool) (Pool, error) {
	cidr, err := netip.ParsePrefix(ip.Spec.CIDR)
	if err != nil {
		return Pool{}, fmt.Errorf("cidr %q: %w", ip.Spec.CIDR, err)
	}
	bits := v1alpha1.DefaultBlockSizeIPv4
	if cidr.Addr().Is6() {
		bits = v1alpha1.DefaultBlockSizeIPv6
	}
	if ip.Spec.BlockSize != nil {
		bits = int(*ip.Spec.BlockSize)
	}
	layout, err := blockmath.NewLayout(cidr, bits)
	if err != nil {
		return Pool{}, err
	}
	ipip, vxlan, err := EncapModes(ip.Spec.IPIPMode, ip.Spec.VXLANMode, cidr)
	if err != nil {
		return Pool{}, err
	}
	sel := labels.Everything()
	if ip.Spec.NodeSelector != nil {
		if sel, err = metav1.LabelSelectorAsSelector(ip.Spec.NodeSelector); err != nil {
			return Pool{}, fmt.Errorf("nodeSelector: %w", err)
		}
	}
	return Pool{
		Name:             ip.Name,
		Layout:           layout,
		Selector:         sel,
		Disabled:         ip.Spec.Disabled,
		Deleting:         ip.DeletionTimestamp != nil,
		NATOutgoing:      ip.Spec.NATOutgoing,
		DisableBGPExport: ip.Spec.DisableBGPExport,
		IPIPMode:         ipip,
		VXLANMode:        vxlan,
		created:          ip.CreationTimestamp.Time,
	}, nil
}

// EncapModes checks a pool's encapsulation as the CRD's enum and rules do
// (an older CRD without them, or an object restored past admission, lets
// anything through): each mode Never, Always or CrossSubnet (unset is
// Never), not both enabled, IPIP on IPv4 only. A pool that fails is left
// out whole, as any invalid pool: the agents neither allocate from it nor
// make a tunnel for it, and keep routing every valid pool (the route
// programmer would otherwise refuse the whole desired state).
func EncapModes(ipip, vxlan v1alpha1.EncapMode, cidr netip.Prefix) (v1alpha1.EncapMode, v1alpha1.EncapMode, error) {
	ipip, vxlan = cmp.Or(ipip, v1alpha1.EncapNever), cmp.Or(vxlan, v1alpha1.EncapNever)
	for _, m := range []struct {
		field string
		mode  v1alpha1.EncapMode
	}{{"ipipMode", ipip}, {"vxlanMode", vxlan}} {
		switch m.mode {
		case v1alpha1.EncapNever, v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet:
		default:
			return "", "", fmt.Errorf("%s %q is not an encapsulation mode (Never, Always or CrossSubnet)", m.field, m.mode)
		}
	}
	if ipip != v1alpha1.EncapNever && vxlan != v1alpha1.EncapNever {
		return "", "", fmt.Errorf("ipipMode %s and vxlanMode %s: at most one of them may be enabled", ipip, vxlan)
	}
	if ipip != v1alpha1.EncapNever && !cidr.Addr().Is4() {
		return "", "", fmt.Errorf("ipipMode %s on an IPv6 pool: IPIP is IPv4 only", ipip)
	}
	return ipip, vxlan, nil
}

// All returns the valid pools, IPv4 first, each family in address order.
func (s Set) All() []Pool { return s.pools }

// Get returns the valid pool with the given name.
func (s Set) Get(name string) (Pool, bool) {
	i := slices.IndexFunc(s.pools, func(p Pool) bool { return p.Name == name })
	if i < 0 {
		return Pool{}, false
	}
	return s.pools[i], true
}

// ForBlock returns the pool a block belongs to: the valid pool whose layout
// has this block.
func (s Set) ForBlock(block netip.Prefix) (Pool, bool) {
	for _, p := range s.pools {
		if p.Layout.Contains(block) {
			return p, true
		}
	}
	return Pool{}, false
}

// ForAddr returns the valid pool that contains addr.
func (s Set) ForAddr(addr netip.Addr) (Pool, bool) {
	for _, p := range s.pools {
		if p.CIDR().Contains(addr) {
			return p, true
		}
	}
	return Pool{}, false
}

// ForNode returns the pools of one family (4 or 6) that a node may take new
// addresses from: valid, allocatable and selecting the node, in address order.
func (s Set) ForNode(node labels.Labels, family int) []Pool {
	var out []Pool
	for _, p := range s.pools {
		if p.Family() == family && p.Allocatable() && p.Selects(node) {
			out = append(out, p)
		}
	}
	return out
}

// Settings are the cluster-wide IPAM settings with defaults applied.
type Settings struct {
	StrictAffinity        bool
	GCGracePeriod         time.Duration
	EmptyBlockGracePeriod time.Duration
}

// SettingsFrom converts the IPAMConfiguration; nil (no object) gives the
// defaults.
func SettingsFrom(c *v1alpha1.IPAMConfiguration) Settings {
	s := Settings{
		GCGracePeriod:         v1alpha1.DefaultGCGracePeriodSeconds * time.Second,
		EmptyBlockGracePeriod: v1alpha1.DefaultEmptyBlockGracePeriodSeconds * time.Second,
	}
	if c == nil {
		return s
	}
	s.StrictAffinity = c.Spec.StrictAffinity
	// The schema refuses values below these bounds; the converter keeps
	// them anyway, so a schema change can never make the GC instant.
	if d := c.Spec.GCGracePeriod; d != nil && d.Duration >= time.Second {
		s.GCGracePeriod = d.Duration
	}
	if d := c.Spec.EmptyBlockGracePeriod; d != nil && d.Duration >= 0 {
		s.EmptyBlockGracePeriod = d.Duration
	}
	return s
}
