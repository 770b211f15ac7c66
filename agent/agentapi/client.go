// Package agentapi is the agent's local gRPC API (agent.proto): the CNI
// plugin and rhizomectl talk to the agent of their node through a unix
// socket. This file holds the client side.
package agentapi

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultSocket is where the agent serves this API unless configured
// otherwise.
const DefaultSocket = "/var/run/rhizome/agent.sock"

// ErrAgentNotRunning is returned by Dial when the socket does not exist.
var ErrAgentNotRunning = errors.New("the rhizome agent is not running on this node")

// Dial connects to the agent's socket. It fails at once, without waiting for
// timeouts, when the socket does not exist: a CNI ADD must fail fast and leave
// nothing behind when the agent is down. The caller closes the connection.
func Dial(socket string) (AgentClient, *grpc.ClientConn, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	fi, err := os.Stat(socket)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (no socket at %s): %v", ErrAgentNotRunning, socket, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return nil, nil, fmt.Errorf("%s is not a unix socket", socket)
	}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the rhizome agent at %s: %w", socket, err)
	}
	return NewAgentClient(conn), conn, nil
}
