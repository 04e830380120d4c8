package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The chart's geometry, in SVG user units (pixels).
const (
	width       = 720
	plotLeft    = 84
	plotTop     = 48
	plotWidth   = 600
	plotHeight  = 320
	legendTop   = plotTop + plotHeight + 58
	legendRow   = 20
	legendCol   = 300
	legendWidth = plotWidth
)

// palette is the Okabe-Ito set, told apart by colour-blind readers too.
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

// axis maps data values to one direction of the plot area.
type axis struct {
	lo, hi float64 // in data units (log2 of them on a log axis)
	log    bool
	ticks  []float64 // in data units
}

func (a axis) pos(v float64) float64 {
	if a.log {
		v = math.Log2(v)
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// linearAxis spans the values with round ticks, from 0 when all are at
// least 0 and includeZero is set.
func linearAxis(lo, hi float64, includeZero bool) axis {
	if includeZero && lo > 0 {
		lo = 0
	}
	if lo == hi { // one value: a span around it (above 0 if it is 0)
		d := max(math.Abs(lo)/2, 1)
		lo, hi = lo-d, hi+d
		if includeZero && lo < 0 && hi-d >= 0 {
			lo = 0
		}
	}
	step := niceStep(hi - lo)
	a := axis{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step}
	for v := a.lo; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, math.Round(v/step)*step)
	}
	return a
}

// logAxis spans the values (all > 0) with ticks at powers of 2, or of 10
// over a wide range.
func logAxis(lo, hi float64) axis {
	base := 2.0
	if hi/lo > 4096 {
		base = 10
	}
	first := math.Floor(math.Log(lo)/math.Log(base) + 1e-9)
	last := math.Ceil(math.Log(hi)/math.Log(base) - 1e-9)
	if first == last {
		first, last = first-1, last+1
	}
	a := axis{lo: first * math.Log2(base), hi: last * math.Log2(base), log: true}
	for e := first; e <= last; e++ {
		a.ticks = append(a.ticks, math.Pow(base, e))
	}
	return a
}

// niceStep is the smallest of 1, 2 or 5 times a power of ten that cuts
// span into at most 8 intervals.
func niceStep(span float64) float64 {
	if span <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(span/8)))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(m*p) <= 8*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// label writes a tick value briefly: 1.5M, 250k, 0.5.
func label(v float64) string {
	abs := math.Abs(v)
	switch {
	case abs >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case abs >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// render draws c as a standalone SVG document.
func render(c chart) string {
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for _, p := range s.points {
			xlo, xhi = min(xlo, p.x), max(xhi, p.x)
			ylo, yhi = min(ylo, p.y), max(yhi, p.y)
		}
	}
	var xa axis
	if c.logX {
		xa = logAxis(xlo, xhi)
	} else {
		xa = linearAxis(xlo, xhi, false)
	}
	ya := linearAxis(ylo, yhi, true)
	px := func(v float64) float64 { return plotLeft + xa.pos(v)*plotWidth }
	py := func(v float64) float64 { return plotTop + (1-ya.pos(v))*plotHeight }

	perRow := max(1, legendWidth/legendCol)
	rows := (len(c.series) + perRow - 1) / perRow
	height := legendTop + rows*legendRow + 12

	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	f(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	f(`<title>%s</title>`+"\n", esc(c.title))
	f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	if c.title != "" {
		f(`<text x="%d" y="28" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", plotLeft+plotWidth/2, esc(c.title))
	}
	f(`<rect class="plot-area" x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", plotLeft, plotTop, plotWidth, plotHeight)
	for _, t := range ya.ticks {
		y := py(t)
		f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", plotLeft, y, plotLeft+plotWidth, y)
		f(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", plotLeft-6, y, esc(label(t)))
	}
	for _, t := range xa.ticks {
		x := px(t)
		f(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, plotTop, x, plotTop+plotHeight)
		f(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotTop+plotHeight+18, esc(label(t)))
	}
	f(`<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", plotLeft+plotWidth/2, plotTop+plotHeight+40, esc(c.xLabel))
	f(`<text transform="translate(20 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", plotTop+plotHeight/2, esc(c.yLabel))

	for i, s := range c.series {
		colour := palette[i%len(palette)]
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.x), py(p.y)))
		}
		f(`<g class="series" data-name="%s">`+"\n", esc(s.name))
		if len(pts) > 1 {
			f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), colour)
		}
		for _, p := range s.points {
			f(`<circle class="point" cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s, %s</title></circle>`+"\n",
				px(p.x), py(p.y), colour, esc(s.name), strconv.FormatFloat(p.x, 'f', -1, 64), strconv.FormatFloat(p.y, 'f', -1, 64))
		}
		f("</g>\n")
		lx := plotLeft + (i%perRow)*legendCol
		ly := legendTop + (i/perRow)*legendRow
		f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", lx, ly, lx+24, ly, colour)
		f(`<circle cx="%d" cy="%d" r="3.5" fill="%s"/>`+"\n", lx+12, ly, colour)
		f(`<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+32, ly, esc(s.name))
	}
	f("</svg>\n")
	return b.String()
}
