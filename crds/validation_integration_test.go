//go:build integration

package crds_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestExamplesAreAccepted applies every manifest in deploy/examples, as an
// operator would, and expects the API server to accept all of them.
func TestExamplesAreAccepted(t *testing.T) {
	cp := controlplane.ForTest(t)
	files, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	agentWritten, _ := filepath.Glob("../deploy/examples/agent-written/*.yaml")
	files = append(files, agentWritten...)
	if len(files) < 8 {
		t.Fatalf("found only %d example manifests: %v", len(files), files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), nil, "apply", "-f", f)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", out)
		})
	}
	// Defaults are filled in by the API server.
	out, err := cp.Kubectl(ctx(t), nil, "get", "ippool", "default-ipv6", "-o", "jsonpath={.spec.ipipMode}/{.spec.vxlanMode}")
	if err != nil || string(out) != "Never/Never" {
		t.Fatalf("defaulted encapsulation modes = %q (%v), want Never/Never", out, err)
	}
	out, err = cp.Kubectl(ctx(t), nil, "get", "bgppeer", "tor-rack-a", "-o", "jsonpath={.spec.sourceAddress}/{.spec.importFilters[0].action}")
	if err != nil || string(out) != "UseNodeIP/Accept" {
		t.Fatalf("defaulted peer fields = %q (%v)", out, err)
	}
}

// TestPrinterColumns checks that `kubectl get` shows the useful columns of
// every kind, with values from the objects.
func TestPrinterColumns(t *testing.T) {
	cp := controlplane.ForTest(t)
	apply(t, cp, `
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: columns-pool}
spec: {cidr: 10.99.0.0/16, blockSize: 24, vxlanMode: Always, natOutgoing: true}
---
apiVersion: rhizome.dev/v1alpha1
kind: IPAMBlock
metadata: {name: 10-99-0-0-24}
spec:
  cidr: 10.99.0.0/24
  affinity: columns-node
  allocations: [{address: 10.99.0.7, handle: abc.eth0, node: columns-node}]
status: {allocated: 1}
---
apiVersion: rhizome.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: node.columns-node}
spec: {asNumber: 65099, routeReflectorClusterID: 224.0.0.9}
---
apiVersion: rhizome.dev/v1alpha1
kind: BGPPeer
metadata: {name: columns-peer}
spec: {peerIP: 192.0.2.9, asNumber: 65100, node: columns-node}
---
apiVersion: rhizome.dev/v1alpha1
kind: RhizomeNode
metadata: {name: columns-node}
spec: {ipv4Address: 192.0.2.10/24}
`)
	cases := []struct {
		resource, name string
		header         []string
		row            []string
	}{
		{"ippools", "columns-pool", []string{"CIDR", "BLOCK", "IPIP", "VXLAN", "NAT", "DISABLED", "USED", "FREE"}, []string{"10.99.0.0/16", "24", "Never", "Always", "true"}},
		{"ipamblocks", "10-99-0-0-24", []string{"CIDR", "AFFINITY", "ALLOCATED", "BORROWED"}, []string{"10.99.0.0/24", "columns-node", "1"}},
		{"bgpconfigurations", "node.columns-node", []string{"AS", "MESH", "PORT", "RR-CLUSTER"}, []string{"65099", "224.0.0.9"}},
		{"bgppeers", "columns-peer", []string{"PEER", "AS", "NODE"}, []string{"192.0.2.9", "65100", "columns-node"}},
		{"rhizomenodes", "columns-node", []string{"ROUTER-ID", "AS", "SESSIONS", "ROUTES", "READY"}, nil},
	}
	for _, c := range cases {
		t.Run(c.resource, func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), nil, "get", c.resource, c.name)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 2 {
				t.Fatalf("want a header and one row, got:\n%s", out)
			}
			for _, h := range c.header {
				if !strings.Contains(lines[0], h) {
					t.Errorf("header %q lacks column %s", lines[0], h)
				}
			}
			for _, v := range c.row {
				if !strings.Contains(" "+lines[1]+" ", " "+v+" ") {
					t.Errorf("row %q lacks value %s", lines[1], v)
				}
			}
		})
	}
}

// TestInvalidObjectsAreRejected feeds the API server objects that are wrong in
// one way each and checks that it refuses them with a message that says what
// to fix.
func TestInvalidObjectsAreRejected(t *testing.T) {
	cp := controlplane.ForTest(t)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		// IPPool
		{"pool: malformed cidr", pool(`{cidr: 10.244.0.0/33}`), []string{"cidr 10.244.0.0/33 is not an IPv4 or IPv6 network in CIDR notation"}},
		{"pool: not a cidr at all", pool(`{cidr: pods}`), []string{"cidr pods is not an IPv4 or IPv6 network"}},
		{"pool: host bits set", pool(`{cidr: 10.244.1.0/16}`), []string{"cidr 10.244.1.0/16 has host bits set; use the network address"}},
		{"pool: IPv4 block too small a prefix", pool(`{cidr: 10.0.0.0/8, blockSize: 19}`), []string{"blockSize must be 20-32 for an IPv4 pool and 116-128 for an IPv6 pool"}},
		{"pool: IPv4 block longer than 32", pool(`{cidr: 10.0.0.0/8, blockSize: 33}`), []string{"blockSize must be 20-32 for an IPv4 pool"}},
		{"pool: IPv6 block out of range", pool(`{cidr: "fd00::/48", blockSize: 112}`), []string{"116-128 for an IPv6 pool"}},
		{"pool: block larger than pool", pool(`{cidr: 10.1.0.0/26, blockSize: 24}`), []string{"blockSize is shorter than the prefix of the pool 10.1.0.0/26"}},
		{"pool: smaller than a default block", pool(`{cidr: 10.1.0.0/28}`), []string{"the pool is smaller than one default block"}},
		{"pool: both encapsulations", pool(`{cidr: 10.2.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}`), []string{"ipipMode and vxlanMode cannot both be enabled; set one of them to Never"}},
		{"pool: IPIP on IPv6", pool(`{cidr: "fd00:1::/64", blockSize: 122, ipipMode: Always}`), []string{"ipipMode is IPv4 only; use vxlanMode for an IPv6 pool"}},
		{"pool: unknown mode", pool(`{cidr: 10.3.0.0/16, vxlanMode: Sometimes}`), []string{`Unsupported value: "Sometimes"`, `"Never", "Always", "CrossSubnet"`}},

		// IPAMBlock
		{"block: allocation outside the block", block(`{cidr: 10.5.0.0/26, allocations: [{address: 10.5.1.1, handle: h.eth0}]}`), []string{"every allocation address must be an IP address inside the block's cidr"}},
		{"block: allocation not an address", block(`{cidr: 10.5.0.0/26, allocations: [{address: ten, handle: h.eth0}]}`), []string{"every allocation address must be an IP address inside the block's cidr"}},
		{"block: empty handle", block(`{cidr: 10.5.0.0/26, allocations: [{address: 10.5.0.1, handle: ""}]}`), []string{"handle", "at least 1 chars long"}},
		{"block: host bits", block(`{cidr: 10.5.0.1/26}`), []string{"cidr must be a network address in CIDR notation with no host bits set"}},
		// One kubectl create of these crashed every agent before the rules
		// (docs/design/0014).
		{"block: the whole IPv4 space", namedBlock("0-0-0-0-0", `{cidr: 0.0.0.0/0, affinity: node-a}`), []string{"cidr 0.0.0.0/0 is larger than a block may be", "at most 4096 addresses"}},
		{"block: an IPv6 /64", namedBlock("fd00---64", `{cidr: "fd00::/64", affinity: node-a}`), []string{"cidr fd00::/64 is larger than a block may be"}},
		{"block: IPv4 /19", namedBlock("10-5-0-0-19", `{cidr: 10.5.0.0/19}`), []string{"IPv4 /20-/32"}},
		{"block: affinity not a node name", namedBlock("10-5-0-0-26", `{cidr: 10.5.0.0/26, affinity: "Node A;rm"}`), []string{"affinity Node A;rm is not a node name"}},

		// IPAMConfiguration
		{"ipam config: wrong name", ipamConfig("cluster", `{strictAffinity: true}`), []string{"an IPAMConfiguration must be named 'default'"}},
		{"ipam config: gc grace zero", ipamConfig("default", `{gcGracePeriod: 0s}`), []string{"gcGracePeriod must be at least 1s"}},
		{"ipam config: empty-block grace negative", ipamConfig("default", `{emptyBlockGracePeriod: -5m}`), []string{"emptyBlockGracePeriod must not be negative"}},

		// BGPConfiguration
		{"config: wrong name", bgpConfig("cluster", `{asNumber: 64512}`), []string{"a BGPConfiguration must be named 'default' (cluster-wide) or 'node.<node name>' (one node)"}},
		{"config: AS zero", bgpConfig("default", `{asNumber: 0}`), []string{"spec.asNumber", "greater than or equal to 1"}},
		{"config: AS too large", bgpConfig("default", `{asNumber: 4294967296}`), []string{"spec.asNumber", "less than or equal to 4294967295"}},
		{"config: keepalive not shorter than hold", bgpConfig("default", `{keepaliveTime: 30s, holdTime: 30s}`), []string{"keepaliveTime must be shorter than holdTime"}},
		{"config: hold time too short", bgpConfig("default", `{holdTime: 2s}`), []string{"holdTime must be 0s or between 3s and 65535s"}},
		{"config: RR cluster ID in default", bgpConfig("default", `{routeReflectorClusterID: 224.0.0.1}`), []string{"routeReflectorClusterID is per node"}},
		{"config: RR cluster ID not IPv4", bgpConfig("node.n1", `{routeReflectorClusterID: "fd00::1"}`), []string{"routeReflectorClusterID must be an IPv4 address"}},
		{"config: community out of range", bgpConfig("default", `{communities: ["65536:1"]}`), []string{"community 65536:1 is out of range"}},
		{"config: community malformed", bgpConfig("default", `{communities: ["no-export"]}`), []string{"spec.communities[0]", "should match"}},
		{"config: route protocol of BIRD", bgpConfig("default", `{routeProtocol: 12}`), []string{"routeProtocol is registered to another routing daemon"}},
		{"config: local table", bgpConfig("default", `{routeTable: 255}`), []string{"routeTable cannot be the kernel's unspec (0), default (253) or local (255) table"}},
		{"config: port out of range", bgpConfig("default", `{listenPort: 70000}`), []string{"spec.listenPort", "less than or equal to 65535"}},
		{"config: service range with host bits", bgpConfig("default", `{serviceClusterIPs: [{cidr: 10.96.0.1/12}]}`), []string{"cidr 10.96.0.1/12 must be a network address"}},
		{"config: mesh TTL security zero", bgpConfig("default", `{nodeMeshTTLSecurity: 0}`), []string{"spec.nodeMeshTTLSecurity", "greater than or equal to 1"}},
		{"config: mesh TTL security 255", bgpConfig("default", `{nodeMeshTTLSecurity: 255}`), []string{"spec.nodeMeshTTLSecurity", "less than or equal to 254"}},
		{"config: mesh TTL security per node", bgpConfig("node.n1", `{nodeMeshTTLSecurity: 2}`), []string{"nodeMeshTTLSecurity is cluster-wide"}},
		{"config: restart time too long", bgpConfig("default", `{gracefulRestart: {restartTime: 2h}}`), []string{"restartTime must be between 1s and 4095s"}},

		// BGPPeer
		{"peer: peerIP a hostname", peer(`{peerIP: tor.example, asNumber: 65001}`), []string{"peerIP tor.example is not an IP address, IP:port or [IPv6]:port"}},
		{"peer: port zero", peer(`{peerIP: "10.0.0.1:0", asNumber: 65001}`), []string{"with a port 1-65535"}},
		{"peer: port too large", peer(`{peerIP: "[fd00::1]:65536", asNumber: 65001}`), []string{"with a port 1-65535"}},
		{"peer: IPv6 with port but no brackets", peer(`{peerIP: "fd00::1:179:x", asNumber: 65001}`), []string{"is not an IP address"}},
		{"peer: node and nodeSelector", peer(`{peerIP: 10.0.0.1, asNumber: 65001, node: n1, nodeSelector: {matchLabels: {a: b}}}`), []string{"set at most one of node and nodeSelector"}},
		{"peer: neither peerIP nor peerSelector", peer(`{asNumber: 65001}`), []string{"set exactly one of peerIP (an external router) and peerSelector"}},
		{"peer: both peerIP and peerSelector", peer(`{peerIP: 10.0.0.1, asNumber: 65001, peerSelector: {}}`), []string{"set exactly one of peerIP"}},
		{"peer: no AS", peer(`{peerIP: 10.0.0.1}`), []string{"asNumber is required with peerIP"}},
		{"peer: AS out of range", peer(`{peerIP: 10.0.0.1, asNumber: 4294967296}`), []string{"less than or equal to 4294967295"}},
		{"peer: multihop and GTSM", peer(`{peerIP: 10.0.0.1, asNumber: 65001, ebgpMultihop: 3, ttlSecurity: 1}`), []string{"ebgpMultihop and ttlSecurity cannot both be set"}},
		{"peer: multihop of one", peer(`{peerIP: 10.0.0.1, asNumber: 65001, ebgpMultihop: 1}`), []string{"greater than or equal to 2"}},
		{"peer: filter cidr malformed", peer(`{peerIP: 10.0.0.1, asNumber: 65001, importFilters: [{cidr: 0.0.0.0/-1, action: Accept}]}`), []string{"cidr 0.0.0.0/-1 must be a network address in CIDR notation"}},
		{"peer: filter without action", peer(`{peerIP: 10.0.0.1, asNumber: 65001, importFilters: [{cidr: 0.0.0.0/0}]}`), []string{"action", "Required value"}},
		{"peer: filter min above max", peer(`{peerIP: 10.0.0.1, asNumber: 65001, exportFilters: [{cidr: 10.0.0.0/8, action: Reject, prefixLength: {min: 28, max: 24}}]}`), []string{"prefixLength.min must not be larger than prefixLength.max"}},
		{"peer: filter length beyond 32", peer(`{peerIP: 10.0.0.1, asNumber: 65001, exportFilters: [{cidr: 10.0.0.0/8, action: Reject, prefixLength: {max: 64}}]}`), []string{"prefixLength must be at most 32 for an IPv4 cidr"}},
		{"peer: password without secret", peer(`{peerIP: 10.0.0.1, asNumber: 65001, password: {}}`), []string{"secretKeyRef", "Required value"}},
		{"peer: hold time too short", peer(`{peerIP: 10.0.0.1, asNumber: 65001, holdTime: 1s}`), []string{"holdTime must be 0s or between 3s and 65535s"}},

		// RhizomeNode
		{"node: address without prefix length", rzNode(`{ipv4Address: 10.0.0.5}`), []string{"ipv4Address must be an IPv4 address with prefix length"}},
		{"node: bad MAC", rzNode(`{vxlanTunnelMACAddr: "66:D2:4E:1A:2B"}`), []string{"vxlanTunnelMACAddr", "should match"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), []byte(c.yaml), "create", "-f", "-")
			if err == nil {
				t.Fatalf("accepted:\n%s\n%s", c.yaml, out)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("message lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestImmutableFields checks the update rules: a pool's cidr and blockSize
// and a block's cidr cannot change.
func TestImmutableFields(t *testing.T) {
	cp := controlplane.ForTest(t)
	apply(t, cp, `
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: immutable-pool}
spec: {cidr: 10.77.0.0/16}
---
apiVersion: rhizome.dev/v1alpha1
kind: IPAMBlock
metadata: {name: 10-77-0-0-26}
spec: {cidr: 10.77.0.0/26}
`)
	cases := []struct {
		name, yaml, want string
	}{
		{"pool cidr", `
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: immutable-pool}
spec: {cidr: 10.78.0.0/16}`, "cidr is immutable; create a new IPPool and disable this one to migrate"},
		{"pool blockSize", `
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: immutable-pool}
spec: {cidr: 10.77.0.0/16, blockSize: 28}`, "blockSize is immutable; create a new IPPool to change it"},
		{"block cidr", `
apiVersion: rhizome.dev/v1alpha1
kind: IPAMBlock
metadata: {name: 10-77-0-0-26}
spec: {cidr: 10.77.0.64/26}`, "cidr is immutable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), []byte(c.yaml), "apply", "-f", "-")
			if err == nil {
				t.Fatalf("update accepted: %s", out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("message lacks %q:\n%s", c.want, out)
			}
		})
	}
	// Other fields stay changeable.
	out, err := cp.Kubectl(ctx(t), []byte(`
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: immutable-pool}
spec: {cidr: 10.77.0.0/16, disabled: true, vxlanMode: Always}`), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("changing disabled and vxlanMode: %v\n%s", err, out)
	}
}

func apply(t *testing.T, cp *controlplane.ControlPlane, yaml string) {
	t.Helper()
	if out, err := cp.Kubectl(ctx(t), []byte(yaml), "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func pool(spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: IPPool\nmetadata: {name: invalid-pool}\nspec: " + spec + "\n"
}

func block(spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: IPAMBlock\nmetadata: {name: invalid-block}\nspec: " + spec + "\n"
}

func namedBlock(name, spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: IPAMBlock\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

func ipamConfig(name, spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: IPAMConfiguration\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

func bgpConfig(name, spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

func peer(spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: invalid-peer}\nspec: " + spec + "\n"
}

func rzNode(spec string) string {
	return "apiVersion: rhizome.dev/v1alpha1\nkind: RhizomeNode\nmetadata: {name: invalid-node}\nspec: " + spec + "\n"
}
