package cni

import (
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name     string
		conf     string
		wantCode uint
		wantMsg  string
		check    func(*testing.T, *NetConf)
	}{
		{name: "defaults", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome"}`, check: func(t *testing.T, c *NetConf) {
			if c.AgentSocket != "/var/run/rhizome/agent.sock" || c.timeout != 30*time.Second || c.MTU != 0 {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "all fields", conf: `{"cniVersion":"1.1.0","name":"rhizome","type":"rhizome","mtu":1400,"agentSocket":"/run/x.sock","timeout":"5s","logLevel":"debug"}`, check: func(t *testing.T, c *NetConf) {
			if c.MTU != 1400 || c.AgentSocket != "/run/x.sock" || c.timeout != 5*time.Second {
				t.Errorf("fields: %+v", c)
			}
		}},
		{name: "runtime keys", conf: `{"cniVersion":"1.1.0","name":"rhizome","type":"rhizome","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[]}`, check: func(t *testing.T, c *NetConf) {
			if c.ValidAttachments == nil || len(*c.ValidAttachments) != 1 || (*c.ValidAttachments)[0].ContainerID != "a" {
				t.Errorf("valid attachments: %+v", c.ValidAttachments)
			}
		}},
		{name: "not JSON", conf: `{"cniVersion":`, wantCode: types.ErrDecodingFailure, wantMsg: "not valid JSON"},
		{name: "typo", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","agentSocke":"/x"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "unknown field(s) agentSocke"},
		{name: "mtu type", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","mtu":"1400"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "wrong type"},
		{name: "mtu low", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","mtu":576}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "mtu 576 is out of range"},
		{name: "mtu negative", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","mtu":-1}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "out of range"},
		{name: "timeout", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","timeout":"-1s"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "not a positive duration"},
		{name: "log level", conf: `{"cniVersion":"1.0.0","name":"rhizome","type":"rhizome","logLevel":"loud"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: `logLevel "loud"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conf, err := ParseConfig([]byte(c.conf))
			if c.wantCode != 0 {
				if err == nil || err.Code != c.wantCode || !strings.Contains(err.Msg, c.wantMsg) {
					t.Fatalf("got %v, want code %d containing %q", err, c.wantCode, c.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, conf)
		})
	}
}

// TestParseConfigLenient: DEL and GC take a configuration that ADD would
// refuse (a field this version does not know, a bad value of one of its
// own), so that no conflist change ever strands an address; they still
// need valid JSON, and GC tells "no list" from "an empty list".
func TestParseConfigLenient(t *testing.T) {
	for _, conf := range []string{
		`{"cniVersion":"1.0.0","name":"net1","type":"rhizome","newField":{"x":1},"agentSocke":"/x"}`,
		`{"cniVersion":"1.0.0","name":"net1","type":"rhizome","mtu":"big","timeout":"-1s","logLevel":"loud","agentSocket":7}`,
	} {
		if _, err := ParseConfig([]byte(conf)); err == nil {
			t.Errorf("ADD's parser accepted %s", conf)
		}
		c, err := ParseConfigLenient([]byte(conf))
		if err != nil {
			t.Fatalf("lenient parser refused %s: %v", conf, err)
		}
		if c.Name != "net1" || c.AgentSocket != "/var/run/rhizome/agent.sock" || c.timeout != 30*time.Second || c.ValidAttachments != nil {
			t.Errorf("lenient parse of %s: %+v", conf, c)
		}
	}
	c, err := ParseConfigLenient([]byte(`{"name":"n","cni.dev/valid-attachments":[]}`))
	if err != nil || c.ValidAttachments == nil || len(*c.ValidAttachments) != 0 {
		t.Errorf("an empty list of valid attachments: %+v, %v", c, err)
	}
	if _, err := ParseConfigLenient([]byte(`{"name":`)); err == nil || err.Code != types.ErrDecodingFailure {
		t.Errorf("invalid JSON: %v", err)
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("default", "web-0", "c1", "eth0")
	if a != HostVethName("default", "web-0", "c2", "eth0") {
		t.Error("name changed with the container ID although the pod is the same")
	}
	if a == HostVethName("default", "web-1", "c1", "eth0") || a == HostVethName("other", "web-0", "c1", "eth0") {
		t.Error("different pods got the same name")
	}
	if a == HostVethName("default", "web-0", "c1", "net1") {
		t.Error("a second interface of the pod got the same name")
	}
	if HostVethName("", "", "c1", "eth0") == HostVethName("", "", "c2", "eth0") {
		t.Error("without pod attributes the container ID must distinguish")
	}
	seen := map[string]string{}
	for i := range 20000 {
		pod := "pod-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + itoa(i)
		n := HostVethName("ns", pod, "", "eth0")
		if len(n) > 15 || !strings.HasPrefix(n, HostVethPrefix) {
			t.Fatalf("name %q: want at most 15 characters with prefix %q", n, HostVethPrefix)
		}
		if prev, ok := seen[n]; ok {
			t.Fatalf("collision: %s and %s both %s", prev, pod, n)
		}
		seen[n] = pod
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestParseAddrs(t *testing.T) {
	got, err := parseAddrs([]string{"10.244.0.5/32", "fd00::5/128"})
	if err != nil || len(got) != 2 || !got[1].Addr().Is6() {
		t.Fatalf("parseAddrs = %v, %v", got, err)
	}
	for _, bad := range []string{"10.244.0.5", "10.244.0.0/24", "nonsense"} {
		if _, err := parseAddrs([]string{bad}); err == nil {
			t.Errorf("parseAddrs(%q) accepted", bad)
		}
	}
}

func TestConflist(t *testing.T) {
	got := string(Conflist(ConflistOptions{MTU: 1450, Chain: true}))
	for _, want := range []string{`"cniVersion": "1.0.0"`, `"name": "rhizome"`, `"mtu": 1450`, `"type": "portmap"`, `"type": "bandwidth"`, `"portMappings": true`} {
		if !strings.Contains(got, want) {
			t.Errorf("conflist lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(string(Conflist(ConflistOptions{})), "portmap") {
		t.Error("unchained conflist has portmap")
	}
}
