// Command image builds Rhizome's container image, and the pause and test
// workload images the kubelet lab needs, offline and reproducibly; see
// package imagebuild and docs/design/0012. `make image` runs it:
//
//	go run ./hack/image rhizome [--out bin/image/rhizome] [--ref REF] [--platforms linux/amd64,linux/arm64]
//	go run ./hack/image pause   [--out bin/image/pause] [--ref registry.k8s.io/pause:TAG] [--cc gcc]
//	go run ./hack/image busybox [--out bin/image/busybox] [--ref REF] [--busybox /bin/busybox]
//
// Each writes an OCI layout (OUT/oci), an OCI archive (OUT/NAME.oci.tar) and
// a docker-load tarball per platform (OUT/NAME-linux-ARCH.docker.tar), and
// prints as its last line REF@sha256:<index digest>. Progress goes to
// stderr, that line to stdout.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/internal/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

type common struct {
	repo, out, ref string
}

func (c *common) flags(cmd *cobra.Command, name string) {
	cmd.Flags().StringVar(&c.repo, "repo", ".", "the repository's root")
	cmd.Flags().StringVar(&c.out, "out", filepath.Join("bin", "image", name), "output directory (its oci/ and tarballs are replaced)")
	cmd.Flags().StringVar(&c.ref, "ref", "", "image reference with registry and tag (default: see the command's help)")
}

// write puts idx into c.out and prints the summary, the last line being
// REF@sha256:....
func (c *common) write(cmd *cobra.Command, idx v1.ImageIndex, ref name.Tag, epoch time.Time, start time.Time) error {
	res, err := imagebuild.Write(c.out, ref, idx, epoch)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	log := cmd.ErrOrStderr()
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		size, err := compressedSize(img)
		if err != nil {
			return err
		}
		fmt.Fprintf(log, "%-12s %s  %.1f MiB compressed  %s\n", d.Platform.String(), d.Digest, float64(size)/(1<<20), res.Tarballs[d.Platform.String()])
	}
	fmt.Fprintf(log, "OCI layout %s, OCI archive %s (%.1fs)\n", res.Layout, res.Archive, time.Since(start).Seconds())
	fmt.Fprintln(cmd.OutOrStdout(), res.String())
	return nil
}

// compressedSize is what a node downloads: the layers and the config.
func compressedSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func newCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "image",
		Short:         "Build Rhizome's image and the kubelet lab's pause and busybox images (OCI layout + tarballs)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(rhizomeCommand(), pauseCommand(), busyboxCommand())
	return root
}

func rhizomeCommand() *cobra.Command {
	var c common
	var platforms string
	cmd := &cobra.Command{
		Use:   "rhizome",
		Short: "Rhizome's image: rhizome-agent, rhizome-cni, rhizomectl and the gobgp CLI, for each platform (default ref " + imagebuild.DefaultRepository + ":<version>)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			var ps []v1.Platform
			for _, s := range strings.Split(platforms, ",") {
				p, err := v1.ParsePlatform(strings.TrimSpace(s))
				if err != nil {
					return fmt.Errorf("--platforms %q: %w", s, err)
				}
				ps = append(ps, *p)
			}
			ver, err := imagebuild.ReadVersion(cmd.Context(), c.repo)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "version %s, revision %s, SOURCE_DATE_EPOCH %d\n", ver.Version, ver.Revision, ver.Epoch.Unix())
			idx, ref, err := imagebuild.BuildRhizome(cmd.Context(), imagebuild.RhizomeOptions{
				RepoDir: c.repo, Version: ver, Ref: c.ref, Platforms: ps, Log: cmd.ErrOrStderr(),
			})
			if err != nil {
				return err
			}
			return c.write(cmd, idx, ref, ver.Epoch, start)
		},
	}
	c.flags(cmd, "rhizome")
	cmd.Flags().StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated platforms of the image index")
	return cmd
}

func pauseCommand() *cobra.Command {
	var c common
	var cc string
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "The pod sandbox image: Kubernetes' pause.c from the pinned k8s.io/kubernetes, static, this machine's arch (default ref registry.k8s.io/pause:<its TAG>)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			ver, err := imagebuild.ReadVersion(cmd.Context(), c.repo)
			if err != nil {
				return err
			}
			idx, ref, err := imagebuild.BuildPause(cmd.Context(), imagebuild.PauseOptions{RepoDir: c.repo, CC: cc, Ref: c.ref, Epoch: ver.Epoch})
			if err != nil {
				return err
			}
			return c.write(cmd, idx, ref, ver.Epoch, start)
		},
	}
	c.flags(cmd, "pause")
	cmd.Flags().StringVar(&cc, "cc", "gcc", "C compiler (its target is the image's platform)")
	return cmd
}

func busyboxCommand() *cobra.Command {
	var c common
	var binary string
	cmd := &cobra.Command{
		Use:   "busybox",
		Short: "A test workload image: Debian's static busybox with its applets (sh, sleep, ping, ip, nc, ...), this machine's arch (default ref localhost/rhizome-test/busybox:<version>)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			ver, err := imagebuild.ReadVersion(cmd.Context(), c.repo)
			if err != nil {
				return err
			}
			idx, ref, err := imagebuild.BuildBusybox(cmd.Context(), imagebuild.BusyboxOptions{Binary: binary, Ref: c.ref, Epoch: ver.Epoch})
			if err != nil {
				return err
			}
			return c.write(cmd, idx, ref, ver.Epoch, start)
		},
	}
	c.flags(cmd, "busybox")
	cmd.Flags().StringVar(&binary, "busybox", "/bin/busybox", "a static busybox (Debian's busybox-static)")
	return cmd
}
