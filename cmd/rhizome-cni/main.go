// Command rhizome-cni is Rhizome's CNI plugin; see package cni. The runtime
// runs it as /opt/cni/bin/rhizome. Run as `rhizome-cni install`, it installs
// itself and the network configuration on the host (the DaemonSet's init
// container does this). `rhizome-cni --version` prints the build; the CNI
// VERSION command (CNI_COMMAND=VERSION) still answers with the spec versions
// only, and a runtime never passes arguments, so neither path reaches the
// other.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/internal/version"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "install":
			os.Exit(install(os.Args[2:]))
		case "--version", "version":
			fmt.Println(version.Line("rhizome-cni"))
			os.Exit(0)
		}
	}
	// skel prints this "about" text on stderr when run without CNI_COMMAND.
	cni.Main("Rhizome CNI plugin " + version.Get().String() +
		": pure-L3 pod networking, addresses from the node's rhizome agent")
}

func install(args []string) int {
	fs := flag.NewFlagSet("rhizome-cni install", flag.ContinueOnError)
	o := cni.InstallOptions{}
	fs.StringVar(&o.BinDir, "bin-dir", "/host/opt/cni/bin", "where the plugin binary goes")
	fs.StringVar(&o.ConfDir, "conf-dir", "/host/etc/cni/net.d", "where 10-rhizome.conflist goes")
	fs.StringVar(&o.Conflist.CNIVersion, "cni-version", "1.0.0", "cniVersion of the conflist (1.1.0 enables GC and STATUS)")
	fs.IntVar(&o.Conflist.MTU, "mtu", 0, "pod MTU; 0 takes it from the agent's route programmer at every ADD")
	fs.StringVar(&o.Conflist.AgentSocket, "agent-socket", "", "the agent's socket (default /var/run/rhizome/agent.sock)")
	fs.BoolVar(&o.Conflist.Chain, "chain", true, "chain the standard portmap and bandwidth plugins")
	fs.StringVar(&o.Conflist.LogLevel, "log-level", "", "plugin log level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cni.Install(o); err != nil {
		fmt.Fprintln(os.Stderr, "rhizome-cni install:", err)
		return 1
	}
	fmt.Printf("installed %s/rhizome and %s/%s\n", o.BinDir, o.ConfDir, cni.ConflistName)
	return 0
}
