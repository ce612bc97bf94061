package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/internal/settings"
)

// TestREADMEConfigurationTable keeps the README's configuration table and
// the settings serve reads in step, both ways.
func TestREADMEConfigurationTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	row := regexp.MustCompile("^\\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \\|")
	_, table, ok := strings.Cut(string(b), "| variable | meaning | default |")
	if !ok {
		t.Fatal("README has no configuration table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	for _, line := range strings.Split(table, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			for _, v := range strings.Split(m[1], ", ") {
				documented = append(documented, strings.Trim(v, "`"))
			}
		}
	}
	known := append(settings.Names(), "WXCANCEL_LOG_LEVEL", "WXCANCEL_LOG_FILE", "WXCANCEL_PPROF",
		"GOGC", "GOMAXPROCS") // the Go runtime's, which serve reads too
	for _, name := range known {
		if !slices.Contains(documented, name) {
			t.Errorf("README's configuration table lacks %s", name)
		}
	}
	for _, name := range documented {
		if !slices.Contains(known, name) {
			t.Errorf("README documents %s, which serve does not read", name)
		}
	}
	for _, want := range []string{"make demo", "make test", "```mermaid"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README lacks %q", want)
		}
	}
}
