package main

import (
	"bytes"
	"errors"
	"flag"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// usageBlocks runs eventagg -h and returns each flag's part of the usage,
// by flag name.
func usageBlocks(t *testing.T) map[string]string {
	t.Helper()
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, func(string) string { return "" }, &bytes.Buffer{}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run(-h) = %v, want flag.ErrHelp", err)
	}
	blocks := make(map[string]string)
	// PrintDefaults writes "  -name [type]" and then the help, indented.
	parts := regexp.MustCompile(`(?m)^  -([a-z-]+)`).Split(stderr.String(), -1)
	names := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(stderr.String(), -1)
	for i, m := range names {
		blocks[m[1]] = strings.Join(strings.Fields(parts[i+1]), " ")
	}
	if len(blocks) < 20 {
		t.Fatalf("found %d flags in the usage, want them all:\n%s", len(blocks), stderr.String())
	}
	return blocks
}

// TestHelpMarksStoreSpecificFlags: in eventagg -h, each flag that applies
// to one store says which ("SQLite only:", "PostgreSQL only:"), and no
// other flag does.
func TestHelpMarksStoreSpecificFlags(t *testing.T) {
	t.Parallel()
	blocks := usageBlocks(t)
	for name, help := range blocks {
		sqliteOnly, postgresOnly := slices.Contains(sqliteOnlyFlags, name), slices.Contains(postgresOnlyFlags, name)
		if got := strings.Contains(help, "SQLite only"); got != sqliteOnly {
			t.Errorf("-%s: help %q says \"SQLite only\": %v, want %v", name, help, got, sqliteOnly)
		}
		if got := strings.Contains(help, "PostgreSQL only"); got != postgresOnly {
			t.Errorf("-%s: help %q says \"PostgreSQL only\": %v, want %v", name, help, got, postgresOnly)
		}
	}
	for _, name := range append(slices.Clone(sqliteOnlyFlags), postgresOnlyFlags...) {
		if _, ok := blocks[name]; !ok {
			t.Errorf("-%s is not in the usage", name)
		}
	}
}

// TestStoreSpecificFlagsWithTheOtherStore: every flag of one store, given
// on the command line or in the environment, is accepted with its store
// and refused with the other, as a usage error (exit 2) that names it.
func TestStoreSpecificFlagsWithTheOtherStore(t *testing.T) {
	t.Parallel()
	values := map[string]string{
		"sync": "normal", "max-db-size": "1000000", "busy-timeout": "1s",
		"db-schema": "other", "db-pool-size": "2", "db-connect-timeout": "1s", "db-write-timeout": "1s",
	}
	const sqliteDB, postgresDB = "events.db", "postgres://127.0.0.1:5432/db"
	var tests []configCase
	add := func(names []string, own, other, store string) {
		for _, name := range names {
			v, ok := values[name]
			if !ok {
				t.Fatalf("no test value for -%s", name)
			}
			refused := "-" + name + " applies to " + store + " only"
			tests = append(tests,
				configCase{name + "/Own", []string{"-db", own, "-" + name, v}, nil, func(*config) bool { return true }, ""},
				configCase{name + "/Flag", []string{"-db", other, "-" + name, v}, nil, nil, refused},
				configCase{name + "/Env", nil, map[string]string{"EVENTAGG_DB": other, envName(name): v}, nil, refused},
			)
		}
	}
	add(sqliteOnlyFlags, sqliteDB, postgresDB, "SQLite")
	add(postgresOnlyFlags, postgresDB, sqliteDB, "PostgreSQL")
	runConfigCases(t, tests)
}
