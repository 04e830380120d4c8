// Command plot turns benchmark figures into an SVG line chart, with the
// standard library only.
//
//	go run ./scripts/plot [-title T] [-x LABEL] [-y LABEL] [-logx] [-o out.svg] [input]
//
// It reads the input file (standard input without one) in any of three
// forms, recognised by their lines:
//
//   - A table: one point a line, x first and then one value per series,
//     separated by commas, tabs or spaces, such as
//     "stored_events,events_per_second". A first line that is not numbers
//     is a header naming the columns: the x axis, then each series. Lines
//     starting with # are comments, and "# title: T", "# x: LABEL",
//     "# y: LABEL" and "# logx: true" set what the flags of those names
//     would (a flag given wins), so that a data file says how it is drawn.
//   - The progress lines of cmd/eventagg-load (what it prints on standard
//     error each -progress interval): x is the events sent so far, y the
//     events per second over the interval. On a fresh database with -dups 0
//     the events sent are the events stored: the fill curve of a store.
//   - The summaries of several cmd/eventagg-load runs, one after the other
//     (its standard output): x is each run's -clients, and the series are
//     its publish latency p50 and p99, in milliseconds, one pair per batch
//     size and id kind when the runs differ in those.
//
// A line that fits none of them, a row with the wrong number of values, or
// a value that is not a finite number is refused with an error naming the
// line. Points are drawn in input order, so a table is read as a curve.
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// chart is what is drawn: labelled series of points over two axes.
type chart struct {
	title, xLabel, yLabel string
	logX                  bool
	series                []series
}

type series struct {
	name   string
	points []point
}

type point struct{ x, y float64 }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c chart
	fs.StringVar(&c.title, "title", "", "chart title")
	fs.StringVar(&c.xLabel, "x", "", "x axis label (default: from the input)")
	fs.StringVar(&c.yLabel, "y", "", "y axis label (default: from the input)")
	fs.BoolVar(&c.logX, "logx", false, "logarithmic x axis (for client counts such as 1, 2, 4 ... 32)")
	out := fs.String("o", "", "write the SVG to this `file` (default: standard output)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: plot [flags] [input]\n\nDraws a table (x,y1,y2... with an optional header), eventagg-load progress lines\nor eventagg-load summaries as an SVG line chart.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	in, name := stdin, "standard input"
	switch fs.NArg() {
	case 0:
	case 1:
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, fs.Arg(0)
	default:
		return fmt.Errorf("one input file at most, not %q", fs.Args())
	}
	parsed, err := parse(in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.series = parsed.series
	c.title = cmp.Or(c.title, parsed.title)
	c.xLabel = cmp.Or(c.xLabel, parsed.xLabel)
	c.yLabel = cmp.Or(c.yLabel, parsed.yLabel)
	if !set["logx"] {
		c.logX = parsed.logX
	}
	if c.logX {
		for _, s := range c.series {
			for _, p := range s.points {
				if p.x <= 0 {
					return fmt.Errorf("%s: -logx needs x > 0, and series %q has x = %v", name, s.name, p.x)
				}
			}
		}
	}
	svg := render(c)
	if *out == "" {
		_, err = io.WriteString(stdout, svg)
		return err
	}
	return os.WriteFile(*out, []byte(svg), 0o644)
}

var (
	// "   3.0s     123456 events     41152 events/s     124 requests  0 failed ..."
	progressLine = regexp.MustCompile(`^\s*[0-9.]+s\s+([0-9]+) events\s+([0-9.]+) events/s\s`)
	// "eventagg-load: 400000 events to http://..., 8 clients, batch 1000, 20% duplicates, uuid ids"
	summaryHeader = regexp.MustCompile(`^eventagg-load: .*, ([0-9]+) clients, batch ([0-9]+), .*, (\w+) ids$`)
	// "latency    p50 2.1ms  p90 3.1ms  p99 8.5ms  max 20.3ms"
	summaryLatency = regexp.MustCompile(`^latency\s+p50 ([0-9.]+)ms\s+p90 ([0-9.]+)ms\s+p99 ([0-9.]+)ms`)
)

// parsed is what the input gave: series, and the title, axis labels and
// scale it implies or sets.
type parsed struct {
	title, xLabel, yLabel string
	logX                  bool
	series                []series
}

// directive matches "# title: ...", "# x: ...", "# y: ..." and "# logx: ...".
var directive = regexp.MustCompile(`^#\s*(title|x|y|logx):\s*(.*?)\s*$`)

// parse reads the input, recognising its form by its first meaningful line.
func parse(r io.Reader) (parsed, error) {
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return parsed{}, err
	}
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
			continue
		case progressLine.MatchString(l):
			return parseProgress(lines)
		case strings.HasPrefix(t, "eventagg-load: "):
			return parseSummaries(lines)
		}
		return parseTable(lines)
	}
	return parsed{}, errors.New("no data points")
}

func parseTable(lines []string) (parsed, error) {
	var p parsed
	var xLabel, yLabel string
	columns := 0
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if m := directive.FindStringSubmatch(t); m != nil {
			switch m[1] {
			case "title":
				p.title = m[2]
			case "x":
				xLabel = m[2]
			case "y":
				yLabel = m[2]
			case "logx":
				b, err := strconv.ParseBool(m[2])
				if err != nil {
					return parsed{}, fmt.Errorf("line %d: %q: logx must be true or false", i+1, t)
				}
				p.logX = b
			}
			continue
		}
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fields := splitFields(t)
		if columns == 0 { // the first line: a header, or the first point
			columns = len(fields)
			if columns < 2 {
				return parsed{}, fmt.Errorf("line %d: %q: want x and at least one y value (x,y1,y2...)", i+1, t)
			}
			if _, err := parseNumber(fields[0]); err != nil {
				p.xLabel = fields[0]
				for _, name := range fields[1:] {
					p.series = append(p.series, series{name: name})
				}
				continue
			}
			for j := 1; j < columns; j++ {
				p.series = append(p.series, series{name: fmt.Sprintf("column %d", j+1)})
			}
		}
		if len(fields) != columns {
			return parsed{}, fmt.Errorf("line %d: %q: %d values, want %d as in the first line", i+1, t, len(fields), columns)
		}
		x, err := parseNumber(fields[0])
		if err != nil {
			return parsed{}, fmt.Errorf("line %d: %q: x: %w", i+1, t, err)
		}
		for j, f := range fields[1:] {
			if f == "" || f == "-" { // no value for this series at this x
				continue
			}
			y, err := parseNumber(f)
			if err != nil {
				return parsed{}, fmt.Errorf("line %d: %q: column %d: %w", i+1, t, j+2, err)
			}
			p.series[j].points = append(p.series[j].points, point{x, y})
		}
	}
	if len(p.series) == 1 {
		p.yLabel = p.series[0].name
	}
	p.xLabel, p.yLabel = cmp.Or(xLabel, p.xLabel), cmp.Or(yLabel, p.yLabel)
	return p, checkPoints(p)
}

func parseProgress(lines []string) (parsed, error) {
	s := series{name: "events/s"}
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		m := progressLine.FindStringSubmatch(l)
		if m == nil {
			return parsed{}, fmt.Errorf("line %d: %q: not an eventagg-load progress line (\"  1.0s  12000 events  12000 events/s ...\")", i+1, t)
		}
		x, errX := parseNumber(m[1])
		y, errY := parseNumber(m[2])
		if err := errors.Join(errX, errY); err != nil {
			return parsed{}, fmt.Errorf("line %d: %q: %w", i+1, t, err)
		}
		s.points = append(s.points, point{x, y})
	}
	p := parsed{xLabel: "events sent", yLabel: "events/s", series: []series{s}}
	return p, checkPoints(p)
}

func parseSummaries(lines []string) (parsed, error) {
	type group struct{ batch, ids string }
	var (
		order   []group
		p50s    = map[group][]point{}
		p99s    = map[group][]point{}
		current *group
		clients float64
		headAt  int
	)
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if m := summaryHeader.FindStringSubmatch(t); m != nil {
			if current != nil {
				return parsed{}, fmt.Errorf("line %d: a run starts, and the run of line %d printed no latency line", i+1, headAt)
			}
			n, err := parseNumber(m[1])
			if err != nil {
				return parsed{}, fmt.Errorf("line %d: %q: clients: %w", i+1, t, err)
			}
			g := group{m[2], m[3]}
			if _, ok := p50s[g]; !ok {
				order = append(order, g)
				p50s[g] = nil
			}
			current, clients, headAt = &g, n, i+1
			continue
		}
		if strings.HasPrefix(t, "eventagg-load: ") {
			return parsed{}, fmt.Errorf("line %d: %q: not the header of an eventagg-load run (\"eventagg-load: ..., N clients, batch B, ..., uuid ids\")", i+1, t)
		}
		if !strings.HasPrefix(t, "latency ") {
			continue // the summary's other lines
		}
		m := summaryLatency.FindStringSubmatch(t)
		if m == nil || current == nil {
			return parsed{}, fmt.Errorf("line %d: %q: want \"latency p50 Xms p90 Yms p99 Zms ...\" after an \"eventagg-load: \" line", i+1, t)
		}
		p50, err50 := parseNumber(m[1])
		p99, err99 := parseNumber(m[3])
		if err := errors.Join(err50, err99); err != nil {
			return parsed{}, fmt.Errorf("line %d: %q: %w", i+1, t, err)
		}
		p50s[*current] = append(p50s[*current], point{clients, p50})
		p99s[*current] = append(p99s[*current], point{clients, p99})
		current = nil
	}
	if current != nil {
		return parsed{}, fmt.Errorf("the run of line %d printed no latency line", headAt)
	}
	p := parsed{xLabel: "clients", yLabel: "publish latency, ms"}
	for _, g := range order {
		suffix := ""
		if len(order) > 1 {
			suffix = fmt.Sprintf(" (batch %s, %s ids)", g.batch, g.ids)
		}
		byX := func(a, b point) int { return cmp.Compare(a.x, b.x) }
		slices.SortStableFunc(p50s[g], byX)
		slices.SortStableFunc(p99s[g], byX)
		p.series = append(p.series, series{"p50" + suffix, p50s[g]}, series{"p99" + suffix, p99s[g]})
	}
	return p, checkPoints(p)
}

// checkPoints refuses an input with no point to draw.
func checkPoints(p parsed) error {
	for _, s := range p.series {
		if len(s.points) > 0 {
			return nil
		}
	}
	return errors.New("no data points")
}

func splitFields(line string) []string {
	var fields []string
	switch {
	case strings.Contains(line, ","):
		fields = strings.Split(line, ",")
	case strings.Contains(line, "\t"):
		fields = strings.Split(line, "\t")
	default:
		return strings.Fields(line)
	}
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return fields
}

// parseNumber reads a finite number; "_" may group digits (1_000_000).
func parseNumber(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a finite number", s)
	}
	return v, nil
}
