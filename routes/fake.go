package routes

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// TB is the part of testing.TB the fakes use to fail a test on misuse.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// FakeTable is a stateful Table for tests. It behaves like the kernel for
// the operations the Reconciler uses (EEXIST on Create over any route,
// ESRCH on Delete of a route we do not hold) and fails the test when the
// Reconciler misuses it: writing an invalid route, overwriting a foreign
// route (even on a key that was ours), or deleting a foreign route.
type FakeTable struct {
	t  TB
	mu sync.Mutex
	// ours and foreign are the routes of our protocol and of others.
	ours, foreign map[netip.Prefix]Route
	failNext      map[netip.Prefix]syscall.Errno
	// Counters of routes changed, by operation (failed writes do not
	// count), and of List calls.
	Creates, Replaces, Deletes, Lists int
	// Failed counts writes the table refused.
	Failed int
}

// NewFakeTable returns an empty FakeTable reporting misuse to t.
func NewFakeTable(t TB) *FakeTable {
	return &FakeTable{t: t, ours: map[netip.Prefix]Route{}, foreign: map[netip.Prefix]Route{}, failNext: map[netip.Prefix]syscall.Errno{}}
}

// List implements Table.
func (f *FakeTable) List() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Lists++
	out := make([]Route, 0, len(f.ours))
	for _, r := range f.ours {
		out = append(out, clone(r))
	}
	return out, nil
}

func clone(r Route) Route {
	r.NextHops = slices.Clone(r.NextHops)
	return r
}

func (f *FakeTable) check(op string, r Route) bool {
	f.t.Helper()
	if err := r.Validate(); err != nil {
		f.t.Errorf("FakeTable.%s: invalid route: %v", op, err)
		return false
	}
	n := clone(r)
	n.Normalize()
	if !n.Equal(r) {
		f.t.Errorf("FakeTable.%s: route %v is not normalized", op, r)
		return false
	}
	return true
}

func (f *FakeTable) write(op string, routes []Route, fn func(Route) error) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	we := &WriteError{Op: op}
	for _, r := range routes {
		err := error(nil)
		if e, ok := f.failNext[r.Dst]; ok {
			delete(f.failNext, r.Dst)
			err = e
		} else {
			err = fn(r)
		}
		if err != nil {
			f.Failed++
			we.Failed = append(we.Failed, RouteError{Route: r, Err: err})
		}
	}
	if len(we.Failed) == 0 {
		return nil
	}
	return we
}

// Create implements Table.
func (f *FakeTable) Create(routes []Route) error {
	f.t.Helper()
	return f.write("create", routes, func(r Route) error {
		if !f.check("Create", r) {
			return syscall.EINVAL
		}
		_, a := f.ours[r.Dst]
		_, b := f.foreign[r.Dst]
		if a || b {
			return syscall.EEXIST
		}
		f.Creates++
		f.ours[r.Dst] = clone(r)
		return nil
	})
}

// Replace implements Table.
func (f *FakeTable) Replace(routes []Route) error {
	f.t.Helper()
	return f.write("replace", routes, func(r Route) error {
		if !f.check("Replace", r) {
			return syscall.EINVAL
		}
		f.Replaces++
		if _, foreign := f.foreign[r.Dst]; foreign {
			// Whether or not the key was ours before: a route of
			// another protocol (a pod's own route, one made by hand) is
			// never overwritten.
			f.t.Errorf("FakeTable.Replace: overwrote the foreign route %v", f.foreign[r.Dst])
			delete(f.foreign, r.Dst)
		}
		f.ours[r.Dst] = clone(r)
		return nil
	})
}

// Delete implements Table.
func (f *FakeTable) Delete(routes []Route) error {
	f.t.Helper()
	return f.write("delete", routes, func(r Route) error {
		if _, ok := f.ours[r.Dst]; !ok {
			return syscall.ESRCH
		}
		f.Deletes++
		delete(f.ours, r.Dst)
		return nil
	})
}

// Routes returns our routes, sorted by destination address, then length.
func (f *FakeTable) Routes() []Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.ours))
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
	return out
}

// Writes is the total number of routes changed so far.
func (f *FakeTable) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Creates + f.Replaces + f.Deletes
}

// AddForeign puts a route of another protocol into the table; it replaces
// ours if we hold the key (like `ip route replace` by hand).
func (f *FakeTable) AddForeign(r Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ours, r.Dst)
	f.foreign[r.Dst] = r
}

// RemoveForeign deletes a foreign route.
func (f *FakeTable) RemoveForeign(p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.foreign, p)
}

// Foreign returns the foreign route at p.
func (f *FakeTable) Foreign(p netip.Prefix) (Route, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.foreign[p]
	return r, ok
}

// SetOurs puts a route of our protocol into the table behind the
// Reconciler's back (a previous run's route, or drift).
func (f *FakeTable) SetOurs(r Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Normalize()
	f.ours[r.Dst] = r
}

// DeleteOurs removes one of our routes behind the Reconciler's back.
func (f *FakeTable) DeleteOurs(p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ours, p)
}

// FailNext makes the next write of p fail with errno.
func (f *FakeTable) FailNext(p netip.Prefix, errno syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext[p] = errno
}

// FakeDevices is a stateful Devices for tests: it keeps the device specs
// and VTEPs it was given and hands out fixed interface indexes.
type FakeDevices struct {
	mu sync.Mutex
	// Underlay is the underlay's index and MTU; Resolved is what Resolve
	// answers, by address.
	UnderlayIndex, UnderlayMTU int
	Resolved                   map[netip.Addr][]NextHop
	// VXLAN, IPIP are the current devices (nil = absent).
	VXLAN *VXLANSpec
	IPIP  *IPIPSpec
	VTEPs []VTEP
	// FailVXLAN makes Ensure fail to create the VXLAN device.
	FailVXLAN bool
}

// Fixed interface indexes of the fake devices.
const (
	FakeVXLANIndex = 100
	FakeIPIPIndex  = 101
)

// Ensure implements Devices.
func (d *FakeDevices) Ensure(spec DeviceSpec) (DeviceStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := DeviceStatus{UnderlayName: spec.Underlay, UnderlayMTU: d.UnderlayMTU,
		Links: linkState{Underlay: d.UnderlayIndex, Subnet4: spec.Address, Subnet6: spec.Address6}}
	var err error
	switch {
	case spec.VXLAN != nil && d.FailVXLAN:
		d.VXLAN = nil
		err = fmt.Errorf("creating %s: operation not supported", spec.VXLAN.Name)
	case spec.VXLAN != nil:
		v := *spec.VXLAN
		v.MTU = TunnelMTU(d.UnderlayMTU, datapath.OverheadVXLAN, v.MTU)
		d.VXLAN = &v
	case spec.RemoveVXLAN:
		d.VXLAN = nil
	}
	if spec.IPIP != nil {
		p := *spec.IPIP
		p.MTU = TunnelMTU(d.UnderlayMTU, datapath.OverheadIPIP, p.MTU)
		d.IPIP = &p
	}
	if d.VXLAN != nil {
		st.Links.VXLAN = FakeVXLANIndex
		st.Devices = append(st.Devices, DeviceInfo{Name: d.VXLAN.Name, Type: "vxlan", MTU: d.VXLAN.MTU,
			Address: d.VXLAN.Address.String(), MAC: d.VXLAN.MAC.String()})
	}
	if d.IPIP != nil {
		st.Links.IPIP = FakeIPIPIndex
		st.Devices = append(st.Devices, DeviceInfo{Name: IPIPDevice, Type: "ipip", MTU: d.IPIP.MTU})
	}
	return st, err
}

// SetVTEPs implements Devices.
func (d *FakeDevices) SetVTEPs(vteps []VTEP) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.VTEPs = slices.Clone(vteps)
	return nil
}

// Resolve implements Devices.
func (d *FakeDevices) Resolve(a netip.Addr) ([]NextHop, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if nhs, ok := d.Resolved[a]; ok {
		return slices.Clone(nhs), nil
	}
	return nil, fmt.Errorf("no route to %s", a)
}

// SetResolved changes what Resolve answers for a (nil: no route), as a
// change of the underlay's routes would.
func (d *FakeDevices) SetResolved(a netip.Addr, nhs ...NextHop) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Resolved == nil {
		d.Resolved = map[netip.Addr][]NextHop{}
	}
	if nhs == nil {
		delete(d.Resolved, a)
		return
	}
	d.Resolved[a] = slices.Clone(nhs)
}

// FakeNAT records the last NATSpec.
type FakeNAT struct {
	mu    sync.Mutex
	Spec  NATSpec
	Syncs int
}

// Sync implements NAT.
func (n *FakeNAT) Sync(s NATSpec) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Spec = s
	n.Syncs++
	return nil
}

// FakeSysctls is a map of kernel parameters; Get of an unknown key fails.
type FakeSysctls struct {
	mu     sync.Mutex
	Values map[string]string
}

// Get implements Sysctls.
func (s *FakeSysctls) Get(k string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.Values[k]
	if !ok {
		return "", fmt.Errorf("%s: no such file", k)
	}
	return v, nil
}

// Set implements Sysctls.
func (s *FakeSysctls) Set(k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.Values[k]; !ok {
		return fmt.Errorf("%s: no such file", k)
	}
	s.Values[k] = v
	return nil
}
