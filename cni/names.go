package cni

import (
	"crypto/sha1"
	"encoding/hex"
)

// HostVethPrefix starts the name of every host-side pod interface, so that
// operators (and the doctor) can tell Rhizome's veths apart.
const HostVethPrefix = "rz"

// HostVethName names the host side of a pod's veth: the prefix and 11 hex
// digits of a SHA-1 over the pod's namespace and name (or, without pod
// attributes, the container ID), plus the interface name when it is not
// eth0. It is stable for a pod across sandbox restarts, fits the kernel's
// 15-character limit, and a collision needs two pods whose hashes agree in
// 44 bits.
func HostVethName(namespace, pod, containerID, ifName string) string {
	key := containerID
	if namespace != "" && pod != "" {
		key = namespace + "/" + pod
	}
	if ifName != "" && ifName != "eth0" {
		key += "/" + ifName
	}
	sum := sha1.Sum([]byte(key))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

// Handle identifies an attachment to the agent's IPAM: the CNI network's
// name, '/', the container ID, '.', the interface. The network name keeps
// the garbage collection of one network from freeing another's addresses
// (a GC request lists only its own network's attachments); CNI network
// names cannot contain '/', so the network is exactly what precedes it.
func Handle(network, containerID, ifName string) string {
	return network + "/" + containerID + "." + ifName
}

// LegacyHandle is the handle of attachments made by plugins before the
// network name was part of it; DEL releases it too.
func LegacyHandle(containerID, ifName string) string { return containerID + "." + ifName }
