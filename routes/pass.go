package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Status is what the agent reports about route programming (RhizomeNode
// status, conditions, logs).
type Status struct {
	// RoutesProgrammed counts our routes in the kernel.
	RoutesProgrammed int
	// RoutesDesired counts the routes the desired state asks for.
	RoutesDesired int
	// StaleRoutes are ours, not desired, kept until SetConverged.
	StaleRoutes int
	Converged   bool
	// Conflicts are prefixes held by another protocol's route, left alone.
	Conflicts []netip.Prefix
	// RouteErrors are routes that could not be built or written, by prefix
	// (at most 20 listed; RouteErrorCount has them all).
	RouteErrors     map[netip.Prefix]string
	RouteErrorCount int
	// LastPass is when the last full pass ended; LastPassDuration how long
	// it took; LastError is its error ("" = none).
	LastPass         time.Time
	LastPassDuration time.Duration
	LastError        string
	Passes           int
	PodMTU           int
	VXLANMAC         string
	Underlay         string
	Devices          []DeviceInfo
	Sysctls          []SysctlStatus
}

// SysctlStatus is a kernel parameter the data path needs.
type SysctlStatus struct {
	Key   string
	Value string
	// Changed says the Reconciler wrote it (it had another value) at some
	// point since it started.
	Changed bool
	Error   string `json:",omitempty"`
}

// Status returns a snapshot.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.unlock()
	s := r.status
	s.RoutesProgrammed = len(r.owned)
	s.Converged = r.converged
	s.PodMTU = r.podMTU()
	s.VXLANMAC = r.cfg.VXLANMAC.String()
	s.Underlay = r.dev.UnderlayName
	s.Devices = slices.Clone(r.dev.Devices)
	s.Conflicts = make([]netip.Prefix, 0, len(r.conflicts))
	for p := range r.conflicts {
		s.Conflicts = append(s.Conflicts, p)
	}
	slices.SortFunc(s.Conflicts, netip.Prefix.Compare)
	s.RouteErrorCount = len(r.routeErrs)
	s.RouteErrors = map[netip.Prefix]string{}
	for p, e := range r.routeErrs {
		if len(s.RouteErrors) == 20 {
			break
		}
		s.RouteErrors[p] = e.Error()
	}
	return s
}

// pass is one full reconciliation: devices, VTEP entries, sysctls, routes,
// NAT. Each part goes on when another fails; the error joins them all.
func (r *Reconciler) pass() error {
	r.lockIdle()
	defer r.unlock()
	start := time.Now()
	var errs []error
	r.failedWrites = 0

	ds, err := r.k.Devices.Ensure(r.deviceSpec())
	if err != nil {
		errs = append(errs, fmt.Errorf("devices: %w", err))
	}
	r.dev = ds
	r.comp = r.newCompiler()
	if r.stateSet && ds.Links.VXLAN != 0 {
		if err := r.k.Devices.SetVTEPs(r.otherVTEPs()); err != nil {
			errs = append(errs, fmt.Errorf("VXLAN neighbours: %w", err))
		}
	}
	sys, err := r.syncSysctls()
	r.status.Sysctls = sys
	if err != nil {
		errs = append(errs, err)
	}
	if err := r.syncRoutes(); err != nil {
		errs = append(errs, err)
	}
	if r.stateSet {
		if err := r.k.NAT.Sync(r.natSpec()); err != nil {
			errs = append(errs, fmt.Errorf("natOutgoing: %w", err))
		}
		r.ready = true
	}

	err = errors.Join(errs...)
	r.status.LastPass = time.Now()
	r.status.LastPassDuration = time.Since(start)
	r.status.Passes++
	r.status.LastError = ""
	if err != nil {
		r.status.LastError = err.Error()
	}
	r.m.passDuration.Observe(r.status.LastPassDuration.Seconds())
	r.m.programmed.Set(float64(len(r.owned)))
	r.m.stale.Set(float64(r.status.StaleRoutes))
	r.m.conflicts.Set(float64(len(r.conflicts)))
	r.m.routeErrors.Set(float64(len(r.routeErrs)))
	if err != nil {
		r.m.errors.WithLabelValues("pass").Inc()
	}
	return err
}

// deviceSpec derives the tunnel devices from the pools. Before the first
// SetState nothing is created or removed: the devices of a previous run
// stay, and so do the routes through them.
func (r *Reconciler) deviceSpec() DeviceSpec {
	spec := DeviceSpec{Underlay: r.cfg.Interface, Address: r.cfg.Address, Address6: r.cfg.Address6}
	if !r.stateSet {
		return spec
	}
	for _, p := range r.state.Pools {
		spec.PoolCIDRs = append(spec.PoolCIDRs, p.CIDR)
	}
	vx, ipip := r.encapsInUse()
	if vx {
		spec.VXLAN = &VXLANSpec{Name: r.cfg.VXLANDevice, VNI: r.cfg.VXLANVNI, Port: r.cfg.VXLANPort,
			MAC: r.cfg.VXLANMAC, Address: r.state.VXLANAddress, MTU: r.cfg.MTU}
	} else {
		spec.RemoveVXLAN = true
	}
	if ipip {
		spec.IPIP = &IPIPSpec{Address: r.state.IPIPAddress, MTU: r.cfg.MTU}
	}
	return spec
}

// otherVTEPs are the VTEPs minus our own.
func (r *Reconciler) otherVTEPs() []VTEP {
	out := make([]VTEP, 0, len(r.state.VTEPs))
	for _, v := range r.state.VTEPs {
		if v.NodeIP != r.dev.Links.Subnet4.Addr() && v.NodeIP != r.dev.Links.Subnet6.Addr() {
			out = append(out, v)
		}
	}
	return out
}

func (r *Reconciler) natSpec() NATSpec {
	var s NATSpec
	for _, p := range r.state.Pools {
		s.Pools = append(s.Pools, p.CIDR)
		if p.NATOutgoing {
			s.Masquerade = append(s.Masquerade, p.CIDR)
		}
	}
	if len(s.Masquerade) == 0 {
		return NATSpec{}
	}
	return s
}

// syncRoutes lists our routes and makes them match the desired set: missing
// ones are created (or restored, if they were ours), different ones
// replaced, unwanted ones deleted once converged.
func (r *Reconciler) syncRoutes() error {
	kernel, err := r.k.Table.List()
	if err != nil {
		return err
	}
	inKernel := make(map[netip.Prefix]Route, len(kernel))
	for _, k := range kernel {
		inKernel[k.Dst] = k
	}
	desired := 0
	var pl plan
	wanted := make(map[netip.Prefix]struct{}, len(inKernel))
	r.want.prefixes(func(p netip.Prefix) {
		want, ok, err := r.want.route(r.comp, p)
		r.noteRouteErr(p, err)
		if !ok {
			if keepUnbuildable(err) {
				if _, in := inKernel[p]; in {
					// Still announced but not buildable right now (its
					// VTEP or device is missing for a moment): the route
					// that works stays; a pass rebuilds it when it can.
					wanted[p] = struct{}{}
				}
			}
			return
		}
		desired++
		wanted[p] = struct{}{}
		have, in := inKernel[p]
		switch {
		case in && !have.Equal(want):
			pl.replace = append(pl.replace, want)
			pl.prev = append(pl.prev, have)
		case !in:
			// Missing, whether it was ours a moment ago (deleted behind
			// our back: restored) or never was. Created, never replaced:
			// a route of another protocol that took the key (a pod's own
			// route that the CNI plugin wrote over a learned one, a route
			// replaced by hand) is someone else's and wins; we hold the
			// key again when it goes.
			pl.create = append(pl.create, want)
		}
	})
	// Drop errors of prefixes that are no longer desired at all.
	for p := range r.routeErrs {
		if _, ok := wanted[p]; !ok && !r.want.has(p) {
			delete(r.routeErrs, p)
		}
	}
	for p := range r.conflicts {
		if _, ok := wanted[p]; !ok {
			delete(r.conflicts, p)
		}
	}
	stale := 0
	for p, have := range inKernel {
		if _, ok := wanted[p]; ok {
			continue
		}
		if r.converged && r.stateSet {
			pl.del = append(pl.del, have)
		} else {
			stale++
		}
	}
	// r.owned becomes the kernel's state plus the plan; execute corrects it
	// for what fails.
	r.owned = inKernel
	for _, c := range pl.create {
		r.owned[c.Dst] = c
	}
	for _, c := range pl.replace {
		r.owned[c.Dst] = c
	}
	for _, d := range pl.del {
		delete(r.owned, d.Dst)
	}
	r.execute(&pl)
	r.status.RoutesDesired = desired
	r.status.StaleRoutes = stale
	if n := len(pl.create) + len(pl.replace) + len(pl.del); n > 0 {
		r.log.Debug("routes synced", "op", "pass", "created", len(pl.create), "replaced", len(pl.replace),
			"deleted", len(pl.del), "stale", stale)
	}
	return nil
}

// keepUnbuildable reports whether a desired route that could not be built
// keeps the kernel route it has: yes when something it needs is missing
// (a VTEP, a device, a next hop's route), no when it simply has no next
// hop left but ourselves.
func keepUnbuildable(err error) bool { return err != nil && !errors.Is(err, errNoPath) }

// has reports whether p is in the desired inputs at all.
func (d *desiredSet) has(p netip.Prefix) bool {
	_, a := d.blocks[p]
	_, b := d.remote[p]
	_, c := d.lent[p]
	return a || b || c
}

// syncSysctls sets what forwarding needs: ip_forward (and IPv6 forwarding
// when IPv6 is in use), and loose reverse-path filtering on the underlay
// and tunnel devices where it would otherwise be strict, since ECMP and
// CrossSubnet make paths asymmetric (a packet from a remote pod may arrive
// on the underlay while our route back to it goes through a tunnel).
func (r *Reconciler) syncSysctls() ([]SysctlStatus, error) {
	want := [][2]string{{"net/ipv4/ip_forward", "1"}}
	if r.cfg.Address6.IsValid() || r.hasIPv6() {
		want = append(want, [2]string{"net/ipv6/conf/all/forwarding", "1"})
	}
	var devs []string
	if r.dev.UnderlayName != "" {
		devs = append(devs, r.dev.UnderlayName)
	}
	for _, d := range r.dev.Devices {
		devs = append(devs, d.Name)
	}
	all, _ := r.k.Sysctls.Get("net/ipv4/conf/all/rp_filter")
	for _, d := range devs {
		key := "net/ipv4/conf/" + d + "/rp_filter"
		v, err := r.k.Sysctls.Get(key)
		if err != nil {
			continue // device gone meanwhile; the next pass sees it
		}
		if max(atoi(all), atoi(v)) == 1 {
			want = append(want, [2]string{key, "2"})
		} else {
			want = append(want, [2]string{key, v})
		}
	}
	var out []SysctlStatus
	var errs []error
	for _, kv := range want {
		st := SysctlStatus{Key: kv[0], Value: kv[1]}
		cur, err := r.k.Sysctls.Get(kv[0])
		if err == nil && cur != kv[1] {
			err = r.k.Sysctls.Set(kv[0], kv[1])
			if err == nil {
				r.sysChanged[kv[0]] = true
				r.log.Info("sysctl set", "op", "sysctl", "key", kv[0], "value", kv[1], "was", cur)
			}
		}
		st.Changed = r.sysChanged[kv[0]]
		if err != nil {
			st.Error = err.Error()
			errs = append(errs, fmt.Errorf("sysctl %s: %w", kv[0], err))
		}
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

func (r *Reconciler) hasIPv6() bool {
	for _, p := range r.state.Pools {
		if p.CIDR.Addr().Is6() {
			return true
		}
	}
	return false
}

func atoi(s string) int {
	v, _ := strconv.Atoi(s)
	return v
}

// Routes returns a copy of our routes in the kernel as last listed and
// written, sorted by prefix, for status displays (rhizomectl routes).
func (r *Reconciler) Routes() []Route {
	r.mu.Lock()
	defer r.unlock()
	out := make([]Route, 0, len(r.owned))
	for _, rt := range r.owned {
		rt.NextHops = slices.Clone(rt.NextHops)
		out = append(out, rt)
	}
	slices.SortFunc(out, func(a, b Route) int { return a.Dst.Compare(b.Dst) })
	return out
}
