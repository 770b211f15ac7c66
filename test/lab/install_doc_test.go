package lab

import (
	"os"
	"strings"
	"testing"
)

// TestInstallDocMatchesTheLab keeps docs/install.md and the kubelet lab's
// install and uninstall equal: the lab runs exactly the commands the
// document gives users, so the end-to-end test tests the document.
func TestInstallDocMatchesTheLab(t *testing.T) {
	b, err := os.ReadFile("../../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	want := []string{
		"kubectl apply -k deploy/crds",
		"kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=rhizome",
		"kubectl apply -k deploy/overlays/mesh",
	}
	want = append(want, UninstallSteps("mesh")...)
	want = append(want, CleanupSteps...)
	want = append(want, strings.Split(NodeCleanupScript, "\n")...)
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/install.md lacks %q, which the kubelet lab runs", w)
		}
	}
}
