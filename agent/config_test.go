package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigKeepsTheContracts(t *testing.T) {
	// Ports and paths others script against (HELPERS: contracts stay).
	c := DefaultConfig()
	// GoBGP's API moved off TCP 127.0.0.1:50051 (issue 15: it is read-write
	// and unauthenticated); --gobgp-api-address=127.0.0.1:50051 restores it.
	if c.GoBGPAPIAddress != "unix:///var/run/rhizome/gobgp/gobgp.sock" || c.HealthAddress != ":9099" || c.AgentSocket != "/var/run/rhizome/agent.sock" || c.Namespace != "rhizome-system" {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err == nil {
		t.Error("the defaults validate without a node name")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // "" for valid
	}{
		{name: "defaults with a node name", mod: func(*Config) {}},
		{name: "no node name", mod: func(c *Config) { c.NodeName = "" }, wantErr: "node name is required"},
		{name: "burst tuning off", mod: func(c *Config) { c.BurstGOGC = -1 }},
		{name: "burst GOGC below the default", mod: func(c *Config) { c.BurstGOGC = 50 }, wantErr: "--burst-gogc 50"},
		{name: "burst heap cap", mod: func(c *Config) { c.BurstHeapCapMiB = 300 }},
		{name: "negative burst heap cap", mod: func(c *Config) { c.BurstHeapCapMiB = -1 }, wantErr: "--burst-heap-cap-mib"},
		{name: "node IP", mod: func(c *Config) { c.NodeIP = netip.MustParseAddr("10.0.0.1") }},
		{name: "IPv6 node IP", mod: func(c *Config) { c.NodeIP = netip.MustParseAddr("fd00::1") }, wantErr: "--node-ip fd00::1 must be an IPv4 address"},
		{name: "IPv4-mapped node IP", mod: func(c *Config) { c.NodeIP = netip.MustParseAddr("::ffff:10.0.0.1") }, wantErr: "must be an IPv4 address"},
		{name: "router ID", mod: func(c *Config) { c.RouterID = netip.MustParseAddr("192.0.2.1") }},
		{name: "IPv6 router ID", mod: func(c *Config) { c.RouterID = netip.MustParseAddr("fd00::1") }, wantErr: "--router-id fd00::1"},
		{name: "no socket", mod: func(c *Config) { c.AgentSocket = "" }, wantErr: "--agent-socket"},
		{name: "resync too short", mod: func(c *Config) { c.ResyncPeriod = 10 * time.Millisecond }, wantErr: "--resync-period 10ms is too short"},
		{name: "resync of one second", mod: func(c *Config) { c.ResyncPeriod = time.Second }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeName = "node-1"
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
