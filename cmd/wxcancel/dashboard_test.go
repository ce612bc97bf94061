package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// The operators' monitoring files, relative to this package.
const (
	dashboardFile      = "../../deploy/grafana/wxcancel.json"
	rulesFile          = "../../deploy/prometheus/rules.yaml"
	prometheusRuleFile = "../../deploy/k8s/prometheusrule.yaml"
	serviceMonitorFile = "../../deploy/k8s/servicemonitor.yaml"
)

// promQL parses expressions as Prometheus does by default.
var promQL = parser.NewParser(parser.Options{})

// loadRules parses the plain rules file with Prometheus' own loader, which
// also parses every expression and annotation template.
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, promQL, slog.New(slog.NewTextHandler(t.Output(), nil)))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

// TestAlertRules checks the alerting rules: Prometheus loads them, every
// alert tells the on-call how urgent it is and what to look at, and the
// PrometheusRule of deploy/k8s carries the same groups.
func TestAlertRules(t *testing.T) {
	groups := loadRules(t)
	var alerts int
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			t.Run(r.Alert, func(t *testing.T) {
				if r.For <= 0 {
					t.Errorf("no for: a single evaluation would fire it")
				}
				if s := r.Labels["severity"]; s != "page" && s != "ticket" {
					t.Errorf("labels.severity %q, want page or ticket", s)
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("no annotations.%s", a)
					}
				}
			})
		}
	}
	if alerts == 0 {
		t.Fatalf("%s has no alerts", rulesFile)
	}

	// spec.groups of the PrometheusRule equals the plain file's groups,
	// compared as decoded YAML so that only content counts.
	var plain struct {
		Groups any `json:"groups"`
	}
	readYAMLFile(t, rulesFile, &plain)
	type meta struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	}
	var pr struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   meta   `json:"metadata"`
		Spec       struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	readYAMLFile(t, prometheusRuleFile, &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || pr.Metadata.Name != "wxcancel" {
		t.Errorf("%s is %s %s/%s, want monitoring.coreos.com/v1 PrometheusRule/wxcancel", prometheusRuleFile, pr.APIVersion, pr.Kind, pr.Metadata.Name)
	}
	if diffs := yamlDiff("groups", plain.Groups, pr.Spec.Groups); len(diffs) > 0 {
		t.Errorf("spec.groups of %s differs from the groups of %s:\n  %s", prometheusRuleFile, rulesFile, strings.Join(diffs, "\n  "))
	}
	// Prometheus selects rules and service monitors by labels, often the
	// same ones: labelled alike, a Prometheus that scrapes the service also
	// loads its alerts.
	var sm struct {
		Metadata meta `json:"metadata"`
	}
	readYAMLFile(t, serviceMonitorFile, &sm)
	if !maps.Equal(pr.Metadata.Labels, sm.Metadata.Labels) {
		t.Errorf("the PrometheusRule's labels %v differ from the ServiceMonitor's %v", pr.Metadata.Labels, sm.Metadata.Labels)
	}
}

func readYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// yamlDiff lists where two decoded YAML values differ, by path; a rule in
// the path is named after its alert.
func yamlDiff(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		keys := slices.Collect(maps.Keys(w))
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		var diffs []string
		for _, k := range keys {
			diffs = append(diffs, yamlDiff(path+"."+k, w[k], g[k])...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		var diffs []string
		for i := range w {
			p := fmt.Sprintf("%s[%d]", path, i)
			if r, ok := w[i].(map[string]any); ok && r["alert"] != nil {
				p += fmt.Sprintf(" (%v)", r["alert"])
			}
			diffs = append(diffs, yamlDiff(p, w[i], g[i])...)
		}
		return diffs
	}
	if reflect.DeepEqual(want, got) {
		return nil
	}
	return []string{fmt.Sprintf("%s: %q in the plain file, %q in the PrometheusRule", path, fmt.Sprint(want), fmt.Sprint(got))}
}

// dashboard is the part of Grafana's dashboard JSON model the checks look at.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// datasourceVar is the dashboard's data source template variable, chosen on
// import.
const datasourceVar = "datasource"

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels lists the panels of d, those inside collapsed rows included.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// grafanaBuiltins are Grafana's global variables the dashboard uses, with a
// value of the kind Grafana substitutes.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "2m",
	"__interval":      "30s",
	"__range":         "6h",
}

var grafanaVarRef = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expandGrafana substitutes the variables of a query as Grafana does before
// sending it to Prometheus: the dashboard's own (vars, regex matchers here)
// and Grafana's built-ins. An unknown variable is an error.
func expandGrafana(expr string, vars map[string]string) (string, error) {
	var unknown []string
	out := grafanaVarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := grafanaVarRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := grafanaBuiltins[name]; ok {
			return v
		}
		unknown = append(unknown, ref)
		return ref
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variables %s", strings.Join(unknown, ", "))
	}
	return out, nil
}

// dashboardVars maps the dashboard's template variables to what stands in
// for them in a query: they are used in regular expression matchers.
func dashboardVars(d dashboard) map[string]string {
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = ".*"
	}
	return vars
}

// rangeRef matches the range of a range vector selector or subquery, once
// the string literals (which may hold brackets of regular expressions) are
// taken out with stringLit.
var (
	rangeRef  = regexp.MustCompile(`\[([^\]:]*)(?::[^\]]*)?\]`)
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
)

// TestDashboard checks the dashboard's JSON model: a unique uid and panel
// ids, every panel on the data source variable and explained, every query
// valid PromQL once Grafana's variables are substituted, every range one
// Grafana sizes to the scrape interval, and every quantile computed from
// aggregated bucket rates.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "wxcancel" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want uid wxcancel, a title and schemaVersion 36 or later", d.UID, d.Title, d.SchemaVersion)
	}
	var dsVar bool
	for _, v := range d.Templating.List {
		if v.Name == datasourceVar && v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = true
		}
	}
	if !dsVar {
		t.Fatalf("no Prometheus data source variable $%s in templating", datasourceVar)
	}
	vars := dashboardVars(d)

	ids := map[int]string{}
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		t.Run(p.Title, func(t *testing.T) {
			if p.Title == "" {
				t.Errorf("panel %d has no title", p.ID)
			}
			if strings.TrimSpace(p.Description) == "" {
				t.Errorf("no description")
			}
			if p.Datasource == nil || !isDatasourceVar(p.Datasource.UID) {
				t.Errorf("datasource %+v: want uid ${%s}", p.Datasource, datasourceVar)
			}
			if len(p.Targets) == 0 {
				t.Errorf("no targets")
			}
			refIDs := map[string]bool{}
			for i, tg := range p.Targets {
				if tg.RefID == "" || refIDs[tg.RefID] {
					t.Errorf("target %d: refId %q missing or repeated", i, tg.RefID)
				}
				refIDs[tg.RefID] = true
				if tg.Datasource != nil && !isDatasourceVar(tg.Datasource.UID) {
					t.Errorf("target %s: datasource uid %q, want ${%s}", tg.RefID, tg.Datasource.UID, datasourceVar)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("target %s: no expr", tg.RefID)
					continue
				}
				for _, m := range rangeRef.FindAllStringSubmatch(stringLit.ReplaceAllString(tg.Expr, `""`), -1) {
					if m[1] != "$__rate_interval" && m[1] != "$__range" {
						t.Errorf("target %s: range [%s]: use $__rate_interval (or $__range for a total over the time range)", tg.RefID, m[1])
					}
				}
				e, err := parseGrafanaExpr(tg.Expr, vars)
				if err != nil {
					t.Errorf("target %s: %v", tg.RefID, err)
					continue
				}
				for _, problem := range quantileProblems(e) {
					t.Errorf("target %s: %s", tg.RefID, problem)
				}
			}
		})
	}
}

func isDatasourceVar(uid string) bool {
	return uid == "${"+datasourceVar+"}" || uid == "$"+datasourceVar
}

func parseGrafanaExpr(expr string, vars map[string]string) (parser.Expr, error) {
	s, err := expandGrafana(expr, vars)
	if err != nil {
		return nil, err
	}
	return promQL.ParseExpr(s)
}

// quantileProblems reports the histogram_quantile calls of e that are not
// over sum by (le, …) (rate(…_bucket[…])): a quantile of per-series buckets
// is meaningless once instances are added.
func quantileProblems(e parser.Expr) []string {
	var problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		c, ok := n.(*parser.Call)
		if !ok || c.Func.Name != "histogram_quantile" {
			return nil
		}
		agg, ok := unparen(c.Args[1]).(*parser.AggregateExpr)
		if !ok || agg.Op != parser.SUM || agg.Without || !slices.Contains(agg.Grouping, model.BucketLabel) {
			problems = append(problems, fmt.Sprintf("%s: want sum by (le, …) of the bucket rates", c))
			return nil
		}
		r, ok := unparen(agg.Expr).(*parser.Call)
		if !ok || r.Func.Name != "rate" {
			problems = append(problems, fmt.Sprintf("%s: want the sum of rate(…_bucket[…])", c))
			return nil
		}
		if ms, ok := r.Args[0].(*parser.MatrixSelector); !ok || !strings.HasSuffix(ms.VectorSelector.(*parser.VectorSelector).Name, "_bucket") {
			problems = append(problems, fmt.Sprintf("%s: want the rate of a _bucket series", c))
		}
		return nil
	})
	return problems
}

func unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// selectedMetrics adds the metric names e selects to used, noting where.
func selectedMetrics(e parser.Expr, where string, used map[string][]string) error {
	var err error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					if m.Type != labels.MatchEqual {
						err = fmt.Errorf("%s: %s selects metric names by a pattern: name them", where, vs)
					}
					name = m.Value
				}
			}
		}
		if name != "" && !slices.Contains(used[name], where) {
			used[name] = append(used[name], where)
		}
		return nil
	})
	return err
}

// usedMetrics returns the metric names the alerting rules and the dashboard
// select, each with the alerts and panels that use it.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			e, err := promQL.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %s: %v", rulesFile, r.Alert+r.Record, err)
			}
			if err := selectedMetrics(e, "alert "+r.Alert+r.Record, used); err != nil {
				t.Error(err)
			}
		}
	}
	d := loadDashboard(t)
	vars := dashboardVars(d)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			e, err := parseGrafanaExpr(tg.Expr, vars)
			if err != nil {
				t.Fatalf("%s: panel %q, target %s: %v", dashboardFile, p.Title, tg.RefID, err)
			}
			if err := selectedMetrics(e, fmt.Sprintf("panel %q", p.Title), used); err != nil {
				t.Error(err)
			}
		}
	}
	return used
}

// servedNames lists the series names of the metric families in a text
// exposition: a histogram serves name_bucket, name_sum and name_count, a
// summary name_sum and name_count besides name.
func servedNames(t *testing.T, exposition io.Reader) map[string]bool {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(exposition)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	served := map[string]bool{}
	for name, f := range families {
		served[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			served[name+"_bucket"], served[name+"_sum"], served[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			served[name+"_sum"], served[name+"_count"] = true, true
		}
	}
	return served
}

// TestDashboardAndRulesUseServedMetrics starts serve and checks that every
// metric the alerting rules and the dashboard select is in its /metrics as
// soon as it is ready, before any command: a name that is not would leave a
// panel empty and an alert silent for ever.
func TestDashboardAndRulesUseServedMetrics(t *testing.T) {
	used := usedMetrics(t)
	if t.Failed() {
		t.FailNow()
	}

	s := startServe(t, wxpaysim.Options{AutoCreate: true}, nil)
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	served := servedNames(t, strings.NewReader(body))

	var missing []string
	for _, name := range slices.Sorted(maps.Keys(used)) {
		if !served[name] {
			missing = append(missing, fmt.Sprintf("  %s (%s)", name, strings.Join(used[name], ", ")))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d metrics used by %s or %s are not in /metrics of a ready serve:\n%s",
			len(missing), rulesFile, dashboardFile, strings.Join(missing, "\n"))
	}
}
