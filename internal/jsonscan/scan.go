// Package jsonscan checks JSON text (RFC 8259) in one pass, without building
// values, and with the stricter rules eventagg puts on what it stores.
//
// Every check rejects invalid UTF-8 and \u escapes that are lone UTF-16
// surrogates: encoding/json silently turns both into U+FFFD, so two different
// inputs would become one. Nesting is bounded by the caller. In strict mode
// ([Value] with strict set) the text must also be I-JSON (RFC 7493): no
// object with two members of the same name, and no number whose magnitude
// overflows a float64 (such as 1e400). Extra precision is allowed: 0.1 is not
// exact in binary either, and payloads are stored byte for byte.
//
// The scanner is iterative: however deep the input, it uses no recursion and
// stops at the depth bound.
package jsonscan

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting [Value] can check.
const MaxDepth = 64

// Kind classifies an [Error].
type Kind uint8

// Kinds of [Error].
const (
	Syntax    Kind = iota // not JSON
	Encoding              // invalid UTF-8 or a lone surrogate escape
	Depth                 // nested deeper than allowed
	Duplicate             // strict: an object repeats a member name
	Range                 // strict: a number overflows a float64
)

// Error says what is wrong with the text, and where.
type Error struct {
	Kind   Kind
	Offset int    // byte offset of the problem in the input
	Reason string // what is wrong, in a few words
}

func (e *Error) Error() string { return fmt.Sprintf("%s at byte %d", e.Reason, e.Offset) }

func errorf(kind Kind, offset int, format string, args ...any) *Error {
	return &Error{Kind: kind, Offset: offset, Reason: fmt.Sprintf(format, args...)}
}

// SkipSpace returns the index of the first byte of data at or after i that
// is not JSON white space.
func SkipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// Value checks the JSON value that starts at data[i], after optional white
// space, and returns the index just past it. Arrays and objects may nest
// maxDepth levels (at most [MaxDepth]): "[1]" is one level. With strict set,
// the value must also be I-JSON, as the package documentation says.
func Value(data []byte, i, maxDepth int, strict bool) (end int, err *Error) {
	maxDepth = min(maxDepth, MaxDepth)
	var (
		depth   int
		objects uint64 // bit d is set when level d+1 is an object
		// strict only: member names of the open objects, and where each
		// object's names start in keys.
		keyBuf  [16][]byte
		keys    = keyBuf[:0]
		markBuf [MaxDepth]int
		marks   = markBuf[:0]
		escaped bool
	)

value:
	i = SkipSpace(data, i)
	if i >= len(data) {
		return i, errEnd(i)
	}
	switch c := data[i]; {
	case c == '"':
		if i, _, err = String(data, i); err != nil {
			return i, err
		}
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return i, errorf(Depth, i, "nests deeper than %d levels", maxDepth)
		}
		if c == '{' {
			objects |= 1 << depth
			marks = append(marks, len(keys))
		} else {
			objects &^= 1 << depth
		}
		depth++
		i = SkipSpace(data, i+1)
		if i < len(data) && (data[i] == '}' && c == '{' || data[i] == ']' && c == '[') {
			i++
			if c == '{' {
				marks = marks[:len(marks)-1]
			}
			depth--
			goto next
		}
		if c == '{' {
			goto key
		}
		goto value
	case c == '-' || '0' <= c && c <= '9':
		if i, err = Number(data, i, strict); err != nil {
			return i, err
		}
	case c == 't':
		if i, err = literal(data, i, "true"); err != nil {
			return i, err
		}
	case c == 'f':
		if i, err = literal(data, i, "false"); err != nil {
			return i, err
		}
	case c == 'n':
		if i, err = literal(data, i, "null"); err != nil {
			return i, err
		}
	default:
		return i, errorf(Syntax, i, "invalid character %s looking for a value", quoteChar(c))
	}

next: // after a value: end, or the next element or member
	if depth == 0 {
		return i, nil
	}
	i = SkipSpace(data, i)
	if i >= len(data) {
		return i, errEnd(i)
	}
	if objects&(1<<(depth-1)) == 0 {
		switch data[i] {
		case ',':
			i++
			goto value
		case ']':
			i++
			depth--
			goto next
		}
		return i, errorf(Syntax, i, "invalid character %s after an array element", quoteChar(data[i]))
	}
	switch data[i] {
	case ',':
		i = SkipSpace(data, i+1)
		goto key
	case '}':
		m := marks[len(marks)-1]
		if strict {
			if dup := duplicate(keys[m:]); dup != nil {
				return i, errorf(Duplicate, i, "duplicate key %q in an object", dup)
			}
		}
		keys, marks = keys[:m], marks[:len(marks)-1]
		i++
		depth--
		goto next
	}
	return i, errorf(Syntax, i, "invalid character %s after an object member", quoteChar(data[i]))

key: // at the name of an object member
	if i >= len(data) {
		return i, errEnd(i)
	}
	if data[i] != '"' {
		return i, errorf(Syntax, i, "invalid character %s looking for an object key", quoteChar(data[i]))
	}
	start := i
	if i, escaped, err = String(data, i); err != nil {
		return i, err
	}
	if strict {
		name := data[start+1 : i-1]
		if escaped {
			name = Unescape(nil, name)
		}
		keys = append(keys, name)
	}
	i = SkipSpace(data, i)
	if i >= len(data) {
		return i, errEnd(i)
	}
	if data[i] != ':' {
		return i, errorf(Syntax, i, "invalid character %s after an object key", quoteChar(data[i]))
	}
	i++
	goto value
}

// duplicate returns a name that occurs twice in names, or nil.
// It may reorder names.
func duplicate(names [][]byte) []byte {
	if len(names) <= 8 {
		for i, a := range names {
			for _, b := range names[i+1:] {
				if bytes.Equal(a, b) {
					return a
				}
			}
		}
		return nil
	}
	slices.SortFunc(names, bytes.Compare)
	for i := 1; i < len(names); i++ {
		if bytes.Equal(names[i-1], names[i]) {
			return names[i]
		}
	}
	return nil
}

func errEnd(i int) *Error { return errorf(Syntax, i, "unexpected end of input") }

func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	if c >= utf8.RuneSelf {
		s = strconv.Quote(string([]byte{c}))
	}
	return "'" + s[1:len(s)-1] + "'"
}

func literal(data []byte, i int, word string) (int, *Error) {
	if len(data)-i >= len(word) && string(data[i:i+len(word)]) == word {
		return i + len(word), nil
	}
	for j := range len(word) {
		if i+j >= len(data) {
			return i + j, errEnd(i + j)
		}
		if data[i+j] != word[j] {
			return i + j, errorf(Syntax, i+j, "invalid character %s in literal %s", quoteChar(data[i+j]), word)
		}
	}
	return i + len(word), nil
}

// String checks the JSON string that starts with the quote at data[i] and
// returns the index just past its closing quote, and whether it holds escapes
// (if not, its content is data[i+1:end-1] as it is).
func String(data []byte, i int) (end int, escaped bool, err *Error) {
	i++ // opening quote
	for i < len(data) {
		c := data[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				return i + 1, escaped, errEnd(i + 1)
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(data, i+2)
				if !ok {
					return i, escaped, errorf(Syntax, i, "invalid \\u escape in string")
				}
				i += 6
				if !utf16.IsSurrogate(r) {
					continue
				}
				if r < 0xdc00 { // a high surrogate needs a low one next
					if i+1 < len(data) && data[i] == '\\' && data[i+1] == 'u' {
						if r2, ok := hex4(data, i+2); ok && 0xdc00 <= r2 && r2 <= 0xdfff {
							i += 6
							continue
						}
					}
				}
				return i - 6, escaped, errorf(Encoding, i-6, "string holds a lone UTF-16 surrogate \\u%04x", r)
			default:
				return i, escaped, errorf(Syntax, i, "invalid escape %s in string", quoteChar(data[i+1]))
			}
		case c < 0x20:
			return i, escaped, errorf(Syntax, i, "invalid control character %s in string (escape it)", quoteChar(c))
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return i, escaped, errorf(Encoding, i, "invalid UTF-8 in string")
			}
			i += size
		}
	}
	return i, escaped, errorf(Syntax, i, "unexpected end of input in string")
}

func hex4(data []byte, i int) (rune, bool) {
	if len(data)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// Unescape appends to dst the content of a JSON string whose quotes are
// removed, with its escapes decoded. s must have passed [String].
func Unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := bytes.IndexByte(s[i:], '\\')
			if j < 0 {
				return append(dst, s[i:]...)
			}
			dst = append(dst, s[i:i+j]...)
			i += j
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(s, i+2)
			if utf16.IsSurrogate(r) {
				r2, _ := hex4(s, i+8)
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			i += 6
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

// Number checks the JSON number that starts at data[i] and returns the index
// just past it. With strict set, a number whose magnitude overflows a
// float64 is an error of kind Range.
func Number(data []byte, i int, strict bool) (int, *Error) {
	start := i
	if data[i] == '-' {
		i++
	}
	intStart := i
	switch {
	case i >= len(data):
		return i, errEnd(i)
	case data[i] == '0':
		i++
	case '1' <= data[i] && data[i] <= '9':
		i = digits(data, i+1)
	default:
		return i, errorf(Syntax, i, "invalid character %s in number", quoteChar(data[i]))
	}
	magnitude := i - intStart // decimal digits before the point
	if data[intStart] == '0' {
		magnitude = 0
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || data[i] < '0' || data[i] > '9' {
			return i, numberEnd(data, i)
		}
		i = digits(data, i)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		neg := false
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			neg = data[i] == '-'
			i++
		}
		if i >= len(data) || data[i] < '0' || data[i] > '9' {
			return i, numberEnd(data, i)
		}
		exp := 0
		for ; i < len(data) && '0' <= data[i] && data[i] <= '9'; i++ {
			exp = min(exp*10+int(data[i]-'0'), 1<<20)
		}
		if neg {
			exp = -exp
		}
		magnitude += exp
	}
	// A value below 10^300 cannot overflow (math.MaxFloat64 is about
	// 1.8e308); only the rare others are parsed.
	if strict && magnitude > 300 {
		if f, _ := strconv.ParseFloat(string(data[start:i]), 64); math.IsInf(f, 0) {
			n := string(data[start:i])
			if len(n) > 40 {
				n = n[:20] + "..." + n[len(n)-10:]
			}
			return start, errorf(Range, start, "number %s overflows a 64-bit float", n)
		}
	}
	return i, nil
}

func digits(data []byte, i int) int {
	for i < len(data) && '0' <= data[i] && data[i] <= '9' {
		i++
	}
	return i
}

func numberEnd(data []byte, i int) *Error {
	if i >= len(data) {
		return errEnd(i)
	}
	return errorf(Syntax, i, "invalid character %s in number", quoteChar(data[i]))
}
