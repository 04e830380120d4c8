package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValue(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		in     string
		strict bool
		kind   Kind // when the input is rejected
		ok     bool
	}{
		{`0`, true, 0, true},
		{` {"a":[1,-2.5e3,true,false,null,"x\u00e9\ud83d\ude00"],"b":{}} `, true, 0, true},
		{`"\"\\\/\b\f\n\r\t"`, true, 0, true},
		{`1.7976931348623157e308`, true, 0, true},
		{`-1e-400`, true, 0, true}, // underflow is lost precision, not overflow
		{`0.000001e306`, true, 0, true},
		{`123456789012345678901234567890`, true, 0, true},
		{deep(64), true, 0, true},
		{`{"a":1,"A":2}`, true, 0, true},       // names are case-sensitive
		{`[{"a":1},{"a":2}]`, true, 0, true},   // siblings may share names
		{`{"a":{"a":{"a":1}}}`, true, 0, true}, // and so may nested objects
		{`{"a":1,"a":2}`, false, 0, true},      // duplicates are a strict rule
		{`{"a":1,"b":2,"a":3}`, true, Duplicate, false},
		{`{"a\u0062":1,"ab":2}`, true, Duplicate, false}, // compared after unescaping
		{`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k3":3}`, true, Duplicate, false},
		{`1e400`, true, Range, false},
		{`-1e400`, true, Range, false},
		{`1e400`, false, 0, true},
		{`[1` + strings.Repeat("0", 400) + `]`, true, Range, false},
		{`1e99999999999999999999999`, true, Range, false},
		{deep(65), true, Depth, false},
		{strings.Repeat("[", 1<<20), false, Depth, false},
		{"\"a\xffb\"", false, Encoding, false},
		{"\"\xed\xa0\x80\"", false, Encoding, false}, // a surrogate in UTF-8
		{`"\ud800"`, false, Encoding, false},
		{`"\udc00\ud800"`, false, Encoding, false},
		{`"\ud800\u0041"`, false, Encoding, false},
		{``, false, Syntax, false},
		{`[1,]`, false, Syntax, false},
		{`{"a" 1}`, false, Syntax, false},
		{`{"a":1,}`, false, Syntax, false},
		{`{a:1}`, false, Syntax, false},
		{`[1 2]`, false, Syntax, false},
		{`01`, false, Syntax, false},
		{`1.`, false, Syntax, false},
		{`.5`, false, Syntax, false},
		{`1e+`, false, Syntax, false},
		{`-`, false, Syntax, false},
		{`tru`, false, Syntax, false},
		{`nul!`, false, Syntax, false},
		{`"a`, false, Syntax, false},
		{"\"a\x00\"", false, Syntax, false},
		{`"\x41"`, false, Syntax, false},
		{`"\u12G4"`, false, Syntax, false},
		{`[}`, false, Syntax, false},
		{`{]`, false, Syntax, false},
		{`{"a":1]`, false, Syntax, false},
		{"\ufeff1", false, Syntax, false},
		{`1 2`, false, Syntax, false},
	}
	for _, tt := range tests {
		end, err := Value([]byte(tt.in), 0, MaxDepth, tt.strict)
		if err == nil && SkipSpace([]byte(tt.in), end) != len(tt.in) {
			err = errorf(Syntax, end, "trailing data")
		}
		name := tt.in
		if len(name) > 60 {
			name = name[:60] + "..."
		}
		switch {
		case tt.ok && err != nil:
			t.Errorf("Value(%q, strict %v) = %v, want it accepted", name, tt.strict, err)
		case !tt.ok && err == nil:
			t.Errorf("Value(%q, strict %v) accepted it, want an error of kind %d", name, tt.strict, tt.kind)
		case !tt.ok && err.Kind != tt.kind:
			t.Errorf("Value(%q, strict %v) = %v (kind %d), want kind %d", name, tt.strict, err, err.Kind, tt.kind)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1,"a":2}`: `duplicate key "a" in an object at byte 12`,
		`[1e999]`:       `number 1e999 overflows a 64-bit float at byte 1`,
		`[[[1]]]`:       `nests deeper than 2 levels at byte 2`,
		"\"\xff\"":      `invalid UTF-8 in string at byte 1`,
		`"\udead"`:      `string holds a lone UTF-16 surrogate \udead at byte 1`,
		`{"a":1 x`:      `invalid character 'x' after an object member at byte 7`,
		`[1,'`:          `invalid character '\'' looking for a value at byte 3`,
		"[\"\x01\"]":    `invalid control character '\x01' in string (escape it) at byte 2`,
		"\x80":          `invalid character '\x80' looking for a value at byte 0`,
		`{"a":tx}`:      `invalid character 'x' in literal true at byte 6`,
		`{"a":[1,2]`:    `unexpected end of input at byte 10`,
		`"abc`:          `unexpected end of input in string at byte 4`,
		`-x`:            `invalid character 'x' in number at byte 1`,
	} {
		_, err := Value([]byte(in), 0, 2, true)
		if err == nil || err.Error() != want {
			t.Errorf("Value(%q) error = %v, want %q", in, err, want)
		}
	}
}

func TestUnescape(t *testing.T) {
	for _, in := range []string{`plain`, `a\"b\\c\/d\b\f\n\r\t`, `\u00e9t\u00E9`, `\ud83d\ude00!`, `\u0000`, `é\u2028`} {
		var want string
		if err := json.Unmarshal([]byte(`"`+in+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if got := string(Unescape(nil, []byte(in))); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// reference checks data with encoding/json and plain rules written
// independently of the scanner: the answer Value should give.
func reference(data []byte, maxDepth int, strict bool) bool {
	if !json.Valid(data) || !utf8.Valid(data) || loneSurrogate(data) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		names  map[string]bool
		key    bool // the next string token is a member name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.key
		if top != nil && top.object {
			top.key = !top.key
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if len(stack) == maxDepth {
					return false
				}
				stack = append(stack, &frame{object: v == '{', names: map[string]bool{}, key: true})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].key = true
				}
			}
		case string:
			if isKey {
				if strict && top.names[v] {
					return false
				}
				top.names[v] = true
			}
		case json.Number:
			if f, _ := strconv.ParseFloat(string(v), 64); strict && math.IsInf(f, 0) {
				return false
			}
		}
	}
}

// loneSurrogate reports whether valid JSON text holds a \u escape of a
// surrogate that is not part of a pair.
func loneSurrogate(data []byte) bool {
	inString, pendingHigh := false, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch {
		case c == '"':
			if pendingHigh {
				return true
			}
			inString = false
		case c == '\\' && data[i+1] == 'u':
			r, _ := strconv.ParseUint(string(data[i+2:i+6]), 16, 32)
			switch {
			case r >= 0xd800 && r < 0xdc00:
				if pendingHigh {
					return true
				}
				pendingHigh = true
			case r >= 0xdc00 && r < 0xe000:
				if !pendingHigh {
					return true
				}
				pendingHigh = false
			default:
				if pendingHigh {
					return true
				}
			}
			i += 5
		case c == '\\':
			if pendingHigh {
				return true
			}
			i++
		default:
			if pendingHigh {
				return true
			}
		}
	}
	return false
}

// FuzzValue checks the scanner against encoding/json and the reference rules:
// both modes accept exactly what the reference accepts, and unescaped
// strings decode as encoding/json decodes them.
func FuzzValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":"\u00e9"}`, `1e400`, `{"a":1,"a":2}`, `"\ud83d\ude00"`,
		`"\ud800"`, "\"\xff\"", `[[[[[[[[[[]]]]]]]]]]`, `-0.0e-0`, `{"":{"":[]}}`, ` "x" `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, strict := range []bool{false, true} {
			end, err := Value(data, 0, 8, strict)
			got := err == nil && SkipSpace(data, end) == len(data)
			if want := reference(data, 8, strict); got != want {
				t.Fatalf("Value(%q, strict %v) accepted = %v (error %v), reference says %v", data, strict, got, err, want)
			}
			if err != nil && (err.Offset < 0 || err.Offset > len(data)) {
				t.Fatalf("Value(%q) error offset %d out of range", data, err.Offset)
			}
		}
		if i := SkipSpace(data, 0); i < len(data) && data[i] == '"' {
			if end, _, err := String(data, i); err == nil {
				var want string
				if json.Unmarshal(data[i:end], &want) != nil {
					t.Fatalf("String accepted %q, encoding/json did not", data[i:end])
				}
				if got := string(Unescape(nil, data[i+1:end-1])); got != want {
					t.Fatalf("Unescape(%q) = %q, encoding/json says %q", data[i+1:end-1], got, want)
				}
			}
		}
	})
}
