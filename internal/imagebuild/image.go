package imagebuild

import (
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI annotation and label keys this package sets (image-spec
// annotations.md).
const (
	AnnotationVersion     = "org.opencontainers.image.version"
	AnnotationRevision    = "org.opencontainers.image.revision"
	AnnotationSource      = "org.opencontainers.image.source"
	AnnotationCreated     = "org.opencontainers.image.created"
	AnnotationTitle       = "org.opencontainers.image.title"
	AnnotationDescription = "org.opencontainers.image.description"
	AnnotationLicenses    = "org.opencontainers.image.licenses"
	AnnotationRefName     = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName on an index.json entry names the image that
	// `ctr images import` creates (containerd's images.AnnotationImageName).
	AnnotationContainerdName = "io.containerd.image.name"
)

// LayerSpec is one layer with the history line that says what it holds.
type LayerSpec struct {
	Layer     v1.Layer
	CreatedBy string
}

// ImageSpec describes one platform's image.
type ImageSpec struct {
	Platform v1.Platform
	Layers   []LayerSpec
	// Config is the runtime configuration: Entrypoint, Cmd, Env, User,
	// WorkingDir, Labels.
	Config v1.Config
	// Created is the image's creation time: the commit's, not the build's.
	Created time.Time
	// Annotations go on the image manifest.
	Annotations map[string]string
}

// NewImage assembles an OCI image (OCI manifest and config media types)
// from spec.
func NewImage(spec ImageSpec) (v1.Image, error) {
	if spec.Platform.OS == "" || spec.Platform.Architecture == "" {
		return nil, fmt.Errorf("image without a platform (%q)", spec.Platform.String())
	}
	created := v1.Time{Time: spec.Created.UTC().Truncate(time.Second)}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	adds := make([]mutate.Addendum, 0, len(spec.Layers))
	for _, l := range spec.Layers {
		adds = append(adds, mutate.Addendum{
			Layer:     l.Layer,
			History:   v1.History{Created: created, CreatedBy: l.CreatedBy},
			MediaType: types.OCILayer,
		})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("adding layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = spec.Platform.Architecture
	cf.OS = spec.Platform.OS
	cf.Variant = spec.Platform.Variant
	cf.OSVersion = spec.Platform.OSVersion
	cf.Created = created
	cf.Config = spec.Config
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("setting the config: %w", err)
	}
	if len(spec.Annotations) > 0 {
		img = mutate.Annotations(img, spec.Annotations).(v1.Image)
	}
	return img, nil
}

// NewIndex assembles an OCI image index of imgs, each entry carrying the
// platform from its image's config, with annotations on the index.
func NewIndex(imgs []v1.Image, annotations map[string]string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		p := cf.Platform()
		if p == nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("an image without a platform in its config")
		}
		if seen[p.String()] {
			return nil, fmt.Errorf("two images for platform %s", p)
		}
		seen[p.String()] = true
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: p},
		})
	}
	if len(annotations) > 0 {
		idx = mutate.Annotations(idx, annotations).(v1.ImageIndex)
	}
	return idx, nil
}
