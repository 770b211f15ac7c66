package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/deploy"
	"github.com/rhizome-net/rhizome/ipam/manifests"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// agentIdentity applies the install's RBAC and writes a kubeconfig holding
// only a token of the agents' ServiceAccount, so that the lab's agents have
// exactly the permissions an installed cluster grants them: every lab run is
// also a test that the RBAC is enough (and an RBAC denial shows up in the
// agents' logs and readiness).
func (l *Lab) agentIdentity(ctx context.Context, cp *controlplane.ControlPlane, c *labClients) error {
	if out, err := cp.Kubectl(ctx, deploy.RBAC, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("applying the agent's RBAC: %w: %s", err, out)
	}
	if out, err := cp.Kubectl(ctx, manifests.All(), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("applying the IPAM admission policies: %w: %s", err, out)
	}
	exp := int64(7 * 24 * 3600)
	tok, err := c.kube.CoreV1().ServiceAccounts(deploy.AgentNamespace).CreateToken(ctx, deploy.AgentServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating a token for the agents: %w", err)
	}
	path := filepath.Join(l.Dir, "agent-kubeconfig")
	if err := os.WriteFile(path, cp.KubeconfigForToken(tok.Status.Token), 0o600); err != nil {
		return err
	}
	l.State.AgentKubeconfig = path
	return l.save()
}
