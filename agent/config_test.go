package agent

import (
	"strings"
	"testing"
)

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
