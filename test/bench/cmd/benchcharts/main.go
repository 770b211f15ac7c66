// Command benchcharts renders the charts of docs/benchmarks.md from the
// benches' JSON results in a directory (default docs/bench): routes.json,
// propagation.json, cni.json, scale.json and rr.json, each to the .svg
// beside it.
// The benches render their own chart when they write results (package
// chart); this re-renders them all, e.g. after the renderer changed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rhizome-net/rhizome/test/bench/chart"
)

func main() {
	dir := flag.String("dir", "docs/bench", "directory of the JSON results; the SVGs are written beside them")
	flag.Parse()
	if err := render(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "benchcharts:", err)
		os.Exit(1)
	}
}

func render(dir string) error {
	var errs []error
	one := func(name string, f func(path string) (string, error)) {
		path := filepath.Join(dir, name+".json")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		svg, err := f(path)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name+".svg"), []byte(svg), 0o644)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		fmt.Println("wrote", filepath.Join(dir, name+".svg"))
	}
	one("routes", func(p string) (string, error) {
		var rs []chart.RouteResult
		err := chart.ReadJSON(p, &rs)
		return chart.RoutesSVG(rs), err
	})
	one("propagation", func(p string) (string, error) {
		var rs []chart.PropagationResult
		err := chart.ReadJSON(p, &rs)
		return chart.PropagationSVG(rs), err
	})
	one("cni", func(p string) (string, error) {
		var rs []chart.CNIResult
		err := chart.ReadJSON(p, &rs)
		return chart.CNISVG(rs), err
	})
	one("scale", func(p string) (string, error) {
		var rs []chart.ScaleResult
		err := chart.ReadJSON(p, &rs)
		return chart.ScaleSVG(rs), err
	})
	one("rr", func(p string) (string, error) {
		var rs []chart.RRResult
		err := chart.ReadJSON(p, &rs)
		return chart.RRSVG(rs), err
	})
	return errors.Join(errs...)
}
