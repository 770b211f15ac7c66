package ctl

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
)

// clusterClients are the API clients of the cluster-wide commands.
type clusterClients struct {
	kube kubernetes.Interface
	rz   rzclient.Interface
}

// clients loads the kubeconfig the way kubectl does: --kubeconfig, then
// $KUBECONFIG, then ~/.kube/config, then the in-cluster configuration;
// --context picks a context other than the current one. The clients are
// made once per command.
func (g *globals) clients() (*clusterClients, error) {
	if g.cc != nil {
		return g.cc, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context}).ClientConfig()
	if err != nil {
		home, _ := os.UserHomeDir()
		return nil, fmt.Errorf("no cluster configuration (tried --kubeconfig, $KUBECONFIG, %s, in-cluster): %w", filepath.Join(home, ".kube", "config"), err)
	}
	cfg.UserAgent = "rhizomectl"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	rz, err := rzclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	g.cc = &clusterClients{kube: kube, rz: rz}
	return g.cc, nil
}
