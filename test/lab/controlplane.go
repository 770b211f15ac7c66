package lab

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

func newControlPlaneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "controlplane",
		Aliases: []string{"cp"},
		Short:   "Manage the local kube-apiserver and etcd (make cluster-up / cluster-down)",
	}
	var withNodes bool
	build := &cobra.Command{
		Use:   "build",
		Short: "Build (or find in the cache) kube-apiserver, etcd and kubectl and print their directory",
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			bins, err := controlplane.EnsureBinaries(cmd.Context(), os.Stderr)
			if err != nil {
				return err
			}
			if withNodes {
				if _, err := controlplane.EnsureNodeBinaries(cmd.Context(), os.Stderr); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "controlplane: binaries ready in %s\n", time.Since(start).Round(time.Millisecond))
			fmt.Println(bins.Dir)
			return nil
		},
	}
	build.Flags().BoolVar(&withNodes, "kubelet", false, "also kube-controller-manager, kube-scheduler, the kubelet and containerd (rhizome-lab up --kubelet)")
	cmd.AddCommand(build)
	cmd.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Start the control plane with Rhizome's CRDs; the last line is export KUBECONFIG=<path>",
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := controlPlaneDir()
			if kc, ok := controlplane.Running(dir); ok {
				fmt.Fprintf(os.Stderr, "controlplane: already running in %s\n", dir)
				fmt.Printf("export KUBECONFIG=%s\n", kc)
				return nil
			}
			if err := controlplane.StopDir(dir); err != nil { // leftovers of a crashed run
				return err
			}
			cp, err := controlplane.Start(cmd.Context(), controlplane.Options{Dir: dir, Log: os.Stderr, Detach: true})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "controlplane: kube-apiserver %s, kubectl at %s\n", cp.URL, cp.Binaries.Kubectl)
			fmt.Printf("export KUBECONFIG=%s\n", cp.Kubeconfig)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "Stop the control plane (by the PIDs it recorded) and remove its files",
		RunE: func(*cobra.Command, []string) error {
			return controlplane.StopDir(controlPlaneDir())
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "env",
		Short: "Print export KUBECONFIG=<path> for the running control plane",
		RunE: func(*cobra.Command, []string) error {
			kc, ok := controlplane.Running(controlPlaneDir())
			if !ok {
				return fmt.Errorf("the control plane is not running; start it with make cluster-up")
			}
			fmt.Printf("export KUBECONFIG=%s\n", kc)
			return nil
		},
	})
	return cmd
}
