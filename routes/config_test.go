package routes

import (
	"strings"
	"testing"
)

func TestConfigDefaultsAndErrors(t *testing.T) {
	c := Config{Address: pfx("192.168.1.10/24")}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Protocol != 114 || c.Table != 254 || c.VXLANDevice != "vxlan.rhizome" || c.VXLANVNI != 4096 ||
		c.VXLANPort != 4789 || len(c.VXLANMAC) != 6 || c.VXLANMAC[0]&0x03 != 0x02 {
		t.Errorf("defaults: %+v", c)
	}
	again := Config{Address: pfx("192.168.1.10/24")}
	_ = again.defaults()
	if again.VXLANMAC.String() != c.VXLANMAC.String() {
		t.Error("the derived VXLAN MAC is not stable")
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, "either the underlay interface or the node address"},
		{Config{Interface: "eth0", Protocol: 3}, "route protocol 3: must be 5-255"},
		{Config{Interface: "eth0", Table: 255}, "route table 255"},
		{Config{Address: pfx("fd00::1/64")}, "is not IPv4"},
		{Config{Interface: "eth0", Address6: pfx("10.0.0.1/24")}, "is not IPv6"},
	} {
		if err := tc.c.defaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.c, err, tc.want)
		}
	}
}
