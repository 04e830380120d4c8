package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// drawn is what an SVG holds that the tests look at.
type drawn struct {
	area   struct{ x, y, w, h float64 }
	series map[string][]point // circles in SVG coordinates, by series name
	order  []string
	texts  []string
}

// readSVG parses doc as XML, failing the test if it is not well formed or
// not an SVG with a plot area.
func readSVG(t *testing.T, doc string) drawn {
	t.Helper()
	d := drawn{series: make(map[string][]point)}
	dec := xml.NewDecoder(strings.NewReader(doc))
	root, current, inText := "", "", false
	num := func(se xml.StartElement, name string) float64 {
		for _, a := range se.Attr {
			if a.Name.Local == name {
				v, err := strconv.ParseFloat(a.Value, 64)
				if err != nil {
					t.Fatalf("<%s %s=%q>: %v", se.Name.Local, name, a.Value, err)
				}
				return v
			}
		}
		t.Fatalf("<%s> without %s", se.Name.Local, name)
		return 0
	}
	attr := func(se xml.StartElement, name string) string {
		for _, a := range se.Attr {
			if a.Name.Local == name {
				return a.Value
			}
		}
		return ""
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if root != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v, want svg in the SVG namespace", tok.Name)
				}
			}
			switch {
			case tok.Name.Local == "rect" && attr(tok, "class") == "plot-area":
				d.area.x, d.area.y, d.area.w, d.area.h = num(tok, "x"), num(tok, "y"), num(tok, "width"), num(tok, "height")
			case tok.Name.Local == "g" && attr(tok, "class") == "series":
				current = attr(tok, "data-name")
				d.order = append(d.order, current)
			case tok.Name.Local == "circle" && attr(tok, "class") == "point":
				d.series[current] = append(d.series[current], point{num(tok, "cx"), num(tok, "cy")})
			case tok.Name.Local == "text":
				inText = true
			}
		case xml.CharData:
			if inText {
				d.texts = append(d.texts, string(tok))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if d.area.w == 0 {
		t.Fatalf("no plot area in\n%s", doc)
	}
	return d
}

func plot(t *testing.T, input string, args ...string) (string, error) {
	t.Helper()
	var out, stderr bytes.Buffer
	err := run(args, strings.NewReader(input), &out, &stderr)
	return out.String(), err
}

// inside checks that every point lies within the plot area.
func (d drawn) inside(t *testing.T) {
	t.Helper()
	for name, pts := range d.series {
		for _, p := range pts {
			if p.x < d.area.x-0.05 || p.x > d.area.x+d.area.w+0.05 || p.y < d.area.y-0.05 || p.y > d.area.y+d.area.h+0.05 {
				t.Errorf("series %q: point (%v, %v) outside the plot area %+v", name, p.x, p.y, d.area)
			}
		}
	}
}

func TestTable(t *testing.T) {
	const input = `# a comment
stored_events,events_per_second
0,54743
1000000,27278
5000000,23193
`
	svg, err := plot(t, input, "-title", "Ingest <rate> & size")
	if err != nil {
		t.Fatal(err)
	}
	d := readSVG(t, svg)
	d.inside(t)
	pts := d.series["events_per_second"]
	if len(pts) != 3 || len(d.series) != 1 {
		t.Fatalf("series %v, want one of 3 points named events_per_second", d.series)
	}
	// x grows to the right, in proportion; a higher rate is drawn higher.
	if !(pts[0].x < pts[1].x && pts[1].x < pts[2].x) || !(pts[0].y < pts[1].y && pts[1].y < pts[2].y) {
		t.Errorf("points %v do not follow the data", pts)
	}
	if got, want := (pts[2].x-pts[0].x)/(pts[1].x-pts[0].x), 5.0; got < want-0.01 || got > want+0.01 {
		t.Errorf("x spacing ratio %v, want %v (a linear axis)", got, want)
	}
	// The y axis starts at 0, at the bottom of the plot area.
	bottom := d.area.y + d.area.h
	if r := (bottom - pts[0].y) / (bottom - pts[2].y); r < 54743.0/23193*0.999 || r > 54743.0/23193*1.001 {
		t.Errorf("y ratio %v, want %v: a linear axis from 0", r, 54743.0/23193)
	}
	joined := strings.Join(d.texts, "|")
	for _, want := range []string{"Ingest <rate> & size", "stored_events", "events_per_second", "5M"} {
		if !strings.Contains(joined, want) {
			t.Errorf("texts %q lack %q", joined, want)
		}
	}
}

func TestTableSeparatorsAndSeries(t *testing.T) {
	for name, input := range map[string]string{
		"tabs":   "clients\tp50\tp99\n1\t13\t38\n8\t83\t168\n32\t-\t400\n",
		"spaces": "clients p50 p99\n1 13 38\n8 83 168\n32 - 400\n",
		"commas": "clients, p50, p99\n1, 13, 38\n8, 83, 168\n32, , 400\n",
	} {
		t.Run(name, func(t *testing.T) {
			svg, err := plot(t, input, "-logx")
			if err != nil {
				t.Fatal(err)
			}
			d := readSVG(t, svg)
			d.inside(t)
			if len(d.series["p50"]) != 2 || len(d.series["p99"]) != 3 || strings.Join(d.order, ",") != "p50,p99" {
				t.Errorf("series %v in order %v; want p50 with 2 points (one left blank), p99 with 3", d.series, d.order)
			}
			// On a log axis 1, 8 and 32 are 3 and 2 doublings apart.
			p := d.series["p99"]
			if r := (p[1].x - p[0].x) / (p[2].x - p[1].x); r < 1.49 || r > 1.51 {
				t.Errorf("log x spacing ratio %v, want 1.5", r)
			}
		})
	}
}

func TestDirectivesAndFlags(t *testing.T) {
	const input = "# title: From the file\n# x: clients\n# y: ms\n# logx: true\nc,v\n1,2\n4,3\n"
	svg, err := plot(t, input)
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Join(readSVG(t, svg).texts, "|")
	for _, want := range []string{"From the file", "clients", "ms"} {
		if !strings.Contains(texts, want) {
			t.Errorf("texts %q lack %q", texts, want)
		}
	}
	// Flags win over the file.
	svg, err = plot(t, input, "-title", "From the flag", "-logx=false")
	if err != nil {
		t.Fatal(err)
	}
	if texts := strings.Join(readSVG(t, svg).texts, "|"); !strings.Contains(texts, "From the flag") || strings.Contains(texts, "From the file") {
		t.Errorf("texts %q: want the flag's title", texts)
	}
}

func TestLoadToolProgress(t *testing.T) {
	// As cmd/eventagg-load prints them on standard error, with -pid and -db.
	const input = `   1.0s      41000 events      41000 events/s      41 requests  0 failed  server RSS 25 MiB  db 9 MiB
   2.0s      79000 events      38000 events/s      79 requests  0 failed  server RSS 26 MiB  db 17 MiB
   3.0s     114000 events      35000 events/s     114 requests  0 failed  server RSS 26 MiB  db 25 MiB
`
	svg, err := plot(t, input)
	if err != nil {
		t.Fatal(err)
	}
	d := readSVG(t, svg)
	d.inside(t)
	pts := d.series["events/s"]
	if len(pts) != 3 || !(pts[0].x < pts[1].x && pts[1].x < pts[2].x) || !(pts[0].y < pts[1].y && pts[1].y < pts[2].y) {
		t.Errorf("progress points %v, want 3 with x growing and the rate falling", pts)
	}
	if texts := strings.Join(d.texts, "|"); !strings.Contains(texts, "events sent") {
		t.Errorf("texts %q lack the x label", texts)
	}
}

func TestLoadToolSummaries(t *testing.T) {
	// Three runs of cmd/eventagg-load, one after the other, on standard output.
	const input = `eventagg-load: 100000 events to http://127.0.0.1:18081, 1 clients, batch 1000, 20% duplicates, uuid ids
sent       100000 events in 100 requests in 1.30s (0 failed)
throughput 76891 events/s, 77 requests/s
latency    p50 13.1ms  p90 15.8ms  p99 38.0ms  max 41.2ms
answers    80000 processed, 20000 duplicates dropped
eventagg-load: 400000 events to http://127.0.0.1:18081, 8 clients, batch 1000, 20% duplicates, uuid ids
sent       400000 events in 400 requests in 4.43s (0 failed)
throughput 90300 events/s, 90 requests/s
latency    p50 83.0ms  p90 145.0ms  p99 168.0ms  max 201.0ms
eventagg-load: 400000 events to http://127.0.0.1:18081, 4 clients, batch 1000, 20% duplicates, uuid ids
latency    p50 40.2ms  p90 70.0ms  p99 90.1ms  max 120.0ms
`
	svg, err := plot(t, input, "-logx")
	if err != nil {
		t.Fatal(err)
	}
	d := readSVG(t, svg)
	d.inside(t)
	p50, p99 := d.series["p50"], d.series["p99"]
	if len(p50) != 3 || len(p99) != 3 {
		t.Fatalf("series %v, want p50 and p99 of 3 runs", d.series)
	}
	for i := range 3 {
		if p99[i].y >= p50[i].y { // SVG y grows downward
			t.Errorf("run %d: p99 drawn at y %v, not above p50 at %v", i, p99[i].y, p50[i].y)
		}
		if i > 0 && p50[i].x <= p50[i-1].x {
			t.Errorf("runs not in order of clients: %v", p50)
		}
	}
	// Runs of two batch sizes make two pairs of series.
	mixed := input + "eventagg-load: 200000 events to http://x, 32 clients, batch 1, 20% duplicates, seq ids\nlatency    p50 2.1ms  p90 3.1ms  p99 8.5ms  max 9ms\n"
	svg, err = plot(t, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(readSVG(t, svg).order, ","); got != "p50 (batch 1000, uuid ids),p99 (batch 1000, uuid ids),p50 (batch 1, seq ids),p99 (batch 1, seq ids)" {
		t.Errorf("series %s", got)
	}
}

func TestRejectsMalformedInput(t *testing.T) {
	for _, tt := range []struct {
		name, input string
		args        []string
		want        string
	}{
		{"Empty", "", nil, "no data points"},
		{"CommentsOnly", "# nothing\n\n", nil, "no data points"},
		{"HeaderOnly", "x,y\n", nil, "no data points"},
		{"OneColumn", "x\n1\n", nil, `line 1: "x": want x and at least one y value`},
		{"NotANumber", "x,y\n1,2\n3,lots\n", nil, `line 3: "3,lots": column 2: "lots" is not a number`},
		{"BadX", "x,y\n1,2\nthree,4\n", nil, `line 3: "three,4": x: "three" is not a number`},
		{"RaggedRow", "x,y,z\n1,2,3\n4,5\n", nil, `line 3: "4,5": 2 values, want 3`},
		{"Infinite", "x,y\n1,+Inf\n", nil, "not a finite number"},
		{"NaN", "x,y\n1,NaN\n", nil, "not a finite number"},
		{"LogOfZero", "clients,y\n0,1\n1,2\n", []string{"-logx"}, "-logx needs x > 0"},
		{"BadLogxDirective", "# logx: sometimes\nx,y\n1,2\n", nil, "logx must be true or false"},
		{"ProgressThenJunk", "   1.0s   1000 events   1000 events/s   1 requests  0 failed\nhello\n", nil, `line 2: "hello": not an eventagg-load progress line`},
		{"SummaryWithoutLatency", "eventagg-load: 1 events to u, 1 clients, batch 1, 0% duplicates, seq ids\nsent 1 events\n", nil, "printed no latency line"},
		{"SummaryBadHeader", "eventagg-load: something else\n", nil, "not the header of an eventagg-load run"},
		{"SummaryBadLatency", "eventagg-load: 1 events to u, 1 clients, batch 1, 0% duplicates, seq ids\nlatency p50 fast\n", nil, `want "latency p50 Xms`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svg, err := plot(t, tt.input, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("plot(%q) = %v, want an error containing %q", tt.input, err, tt.want)
			}
			if svg != "" {
				t.Errorf("plot(%q) wrote %d bytes with its error", tt.input, len(svg))
			}
		})
	}
}

// TestOnePoint: a single point, on either scale, still gets axes around it.
func TestOnePoint(t *testing.T) {
	for _, args := range [][]string{nil, {"-logx"}} {
		for _, input := range []string{"x,y\n8,5\n", "x,y\n8,0\n", "x,y\n8,-3\n"} {
			svg, err := plot(t, input, args...)
			if err != nil {
				t.Fatalf("plot(%q, %v): %v", input, args, err)
			}
			d := readSVG(t, svg)
			d.inside(t)
			if p := d.series["y"]; len(p) != 1 || p[0].x <= d.area.x || p[0].x >= d.area.x+d.area.w {
				t.Errorf("plot(%q, %v): point %v, want one inside the x range, not on its edge", input, args, p)
			}
		}
	}
}

func TestFileInputAndOutput(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.csv"), filepath.Join(dir, "out.svg")
	if err := os.WriteFile(in, []byte("x,y\n1,1\n2,4\n3,9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-o", out, in}, strings.NewReader(""), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	readSVG(t, string(data)).inside(t)
	err = run([]string{filepath.Join(dir, "missing.csv")}, strings.NewReader(""), io.Discard, io.Discard)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing input: %v, want a not-exist error", err)
	}
}

// TestChartsInDocsAreCurrent: each chart under docs/bench is what the
// program draws from the data file beside it, so that the images in
// BENCHMARKS.md show the figures of their data files.
func TestChartsInDocsAreCurrent(t *testing.T) {
	csvs, err := filepath.Glob(filepath.Join("..", "..", "docs", "bench", "*.csv"))
	if err != nil || len(csvs) == 0 {
		t.Fatalf("no data files under docs/bench (%v)", err)
	}
	for _, csv := range csvs {
		svgPath := strings.TrimSuffix(csv, ".csv") + ".svg"
		var got bytes.Buffer
		if err := run([]string{csv}, strings.NewReader(""), &got, io.Discard); err != nil {
			t.Errorf("%s: %v", csv, err)
			continue
		}
		want, err := os.ReadFile(svgPath)
		if err != nil {
			t.Errorf("%s has no chart beside it: %v", csv, err)
			continue
		}
		if got.String() != string(want) {
			t.Errorf("%s is not what %s draws: regenerate it (see BENCHMARKS.md, Charts)", svgPath, csv)
		}
		readSVG(t, got.String()).inside(t)
	}
}
