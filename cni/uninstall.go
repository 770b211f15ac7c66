package cni

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Uninstall removes what Install put on the host: BinDir/rhizome,
// ConfDir/10-rhizome.conflist and the temporary files of an install that was
// interrupted. Nothing else in those directories is touched (another
// plugin's files, the reference plugins). With dryRun it only finds them.
// It returns the paths found, which are the paths removed when the error is
// nil; a file already gone is not an error.
func Uninstall(binDir, confDir string, dryRun bool) ([]string, error) {
	paths := []string{filepath.Join(binDir, "rhizome"), filepath.Join(confDir, ConflistName)}
	for _, dir := range []string{binDir, confDir} {
		tmp, err := filepath.Glob(filepath.Join(dir, ".rhizome-install-*"))
		if err != nil {
			return nil, err
		}
		paths = append(paths, tmp...)
	}
	var found []string
	var errs []error
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, p)
		if dryRun {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		}
	}
	return found, errors.Join(errs...)
}
