// Command promcheck checks Rhizome's monitoring files with Prometheus' own
// code (what promtool check rules runs: rulefmt and the PromQL parser). It
// lives in a module of its own so that Prometheus' dependencies never reach
// Rhizome's go.mod.
//
//	promcheck rules FILE...       validate PrometheusRule objects' groups
//	promcheck objects FILE...     decode ServiceMonitor, PodMonitor and
//	                              PrometheusRule objects strictly into the
//	                              Prometheus Operator's Go types
//	promcheck selectors FILE...   print, as JSON, every series selector the
//	                              rules and Grafana dashboards query
//
// make lint runs the first; test/e2e/ops_test.go resolves the second
// against a live agent's /metrics.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: promcheck rules|selectors FILE...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "rules":
		err = checkRules(os.Args[2:])
	case "selectors":
		err = printSelectors(os.Args[2:])
	case "objects":
		err = checkObjects(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "promcheck:", err)
		os.Exit(1)
	}
}

var promql = parser.NewParser(parser.Options{})

// ruleGroups returns a PrometheusRule's spec (its groups) as a Prometheus
// rule file.
func ruleGroups(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var obj struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if obj.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("%s: kind %q, want PrometheusRule", path, obj.Kind)
	}
	return yaml.JSONToYAML(obj.Spec)
}

// checkRules validates each file's groups as promtool check rules does, and
// Rhizome's own conventions: every alert has a severity and a summary.
func checkRules(paths []string) error {
	var errs []error
	for _, path := range paths {
		content, err := ruleGroups(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		groups, perrs := rulefmt.Parse(content, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
		for _, e := range perrs {
			errs = append(errs, fmt.Errorf("%s: %w", path, e))
		}
		if groups == nil {
			continue
		}
		n := 0
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				n++
				if r.Alert == "" {
					continue
				}
				switch r.Labels["severity"] {
				case "critical", "warning", "info":
				default:
					errs = append(errs, fmt.Errorf("%s: alert %s: severity %q, want critical, warning or info", path, r.Alert, r.Labels["severity"]))
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					errs = append(errs, fmt.Errorf("%s: alert %s lacks a summary or a description", path, r.Alert))
				}
			}
		}
		if len(perrs) == 0 {
			fmt.Printf("%s: %d groups, %d rules: SUCCESS\n", path, len(groups.Groups), n)
		}
	}
	return errors.Join(errs...)
}

// checkObjects decodes each object into the operator's type, refusing
// unknown fields (a misspelt field is otherwise silently ignored by the API
// server's pruning).
func checkObjects(paths []string) error {
	var errs []error
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		var obj any
		switch meta.Kind {
		case monitoringv1.ServiceMonitorsKind:
			obj = &monitoringv1.ServiceMonitor{}
		case monitoringv1.PodMonitorsKind:
			obj = &monitoringv1.PodMonitor{}
		case monitoringv1.PrometheusRuleKind:
			obj = &monitoringv1.PrometheusRule{}
		default:
			errs = append(errs, fmt.Errorf("%s: kind %q is not a Prometheus Operator kind", path, meta.Kind))
			continue
		}
		if meta.APIVersion != monitoringv1.SchemeGroupVersion.String() {
			errs = append(errs, fmt.Errorf("%s: apiVersion %q, want %s", path, meta.APIVersion, monitoringv1.SchemeGroupVersion))
			continue
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		fmt.Printf("%s: %s: SUCCESS\n", path, meta.Kind)
	}
	return errors.Join(errs...)
}

// Selector is one series selector a query uses.
type Selector struct {
	Metric   string   `json:"metric"`
	Matchers []string `json:"matchers"` // name="value", name!~"re" ...
	Source   string   `json:"source"`
}

// grafanaVars are the dashboard variables replaced before parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func printSelectors(paths []string) error {
	var out []Selector
	var errs []error
	add := func(source, expr string) {
		e, err := promql.ParseExpr(grafanaVars.Replace(expr))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", source, expr, err))
			return
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			s := Selector{Metric: vs.Name, Source: source, Matchers: []string{}}
			for _, m := range vs.LabelMatchers {
				if m.Name != model.MetricNameLabel {
					s.Matchers = append(s.Matchers, m.String())
				}
			}
			sort.Strings(s.Matchers)
			out = append(out, s)
			return nil
		})
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		base := filepath.Base(path)
		if strings.HasSuffix(path, ".json") {
			var d struct {
				Panels []panel `json:"panels"`
			}
			if err := json.Unmarshal(b, &d); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			for _, p := range flatten(d.Panels) {
				for _, t := range p.Targets {
					add(base+": panel "+p.Title, t.Expr)
				}
			}
			continue
		}
		content, err := ruleGroups(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var groups rulefmt.RuleGroups
		if err := yaml.Unmarshal(content, &groups); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				add(base+": "+r.Alert+r.Record, r.Expr)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := os.Stdout.Write(buf.Bytes())
	return err
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func flatten(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatten(p.Panels)...)
	}
	return out
}
