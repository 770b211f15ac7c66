package cni

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// InstallOptions configure `rhizome-cni install`, which the DaemonSet's init
// container runs to put the plugin and its configuration on the host.
type InstallOptions struct {
	// BinDir receives the plugin binary as "rhizome" (host /opt/cni/bin).
	BinDir string
	// ConfDir receives 10-rhizome.conflist (host /etc/cni/net.d).
	ConfDir string
	// Conflist shapes the configuration. Leaving MTU at 0 makes the plugin
	// take the MTU from the agent's route programmer at every ADD, so it
	// follows encapsulation changes without rewriting this file.
	Conflist ConflistOptions
}

// ConflistName is the file the installer writes.
const ConflistName = "10-rhizome.conflist"

// Install copies the running executable to BinDir/rhizome and writes the
// conflist, each atomically (write to a temporary file, then rename), so a
// runtime never sees half a binary or half a configuration.
func Install(o InstallOptions) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this executable: %w", err)
	}
	if err := copyAtomic(self, filepath.Join(o.BinDir, "rhizome"), 0o755); err != nil {
		return fmt.Errorf("installing the plugin into %s: %w", o.BinDir, err)
	}
	if err := writeAtomic(filepath.Join(o.ConfDir, ConflistName), Conflist(o.Conflist), 0o644); err != nil {
		return fmt.Errorf("writing the conflist into %s: %w", o.ConfDir, err)
	}
	return nil
}

func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".rhizome-install-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func writeAtomic(dst string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".rhizome-install-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
