// Command rhizome-cni is Rhizome's CNI plugin; see package cni. The runtime
// runs it as /opt/cni/bin/rhizome.
package main

import "github.com/rhizome-net/rhizome/cni"

func main() {
	cni.Main("Rhizome CNI plugin: pure-L3 pod networking, addresses from the node's rhizome agent")
}
