package eventagg_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eventagg/eventagg"
)

func TestValidatePayload(t *testing.T) {
	nest := func(n int) string { return strings.Repeat(`{"a":`, n-1) + "[]" + strings.Repeat("}", n-1) }
	tests := []struct {
		name    string
		payload string
		reason  string // "" if valid
	}{
		{"Object", `{"total":42,"items":[{"sku":"a"},{"sku":"b"}]}`, ""},
		{"Scalar", `"just a string"`, ""},
		{"SpacesAround", " \n{\"a\": 1}\t", ""},
		{"MaxDepth", nest(eventagg.MaxPayloadDepth), ""},
		{"LargestFloat", `1.7976931348623157e308`, ""},
		{"LongPrecision", `3.141592653589793238462643383279`, ""},
		{"BigInteger", `123456789012345678901234567890`, ""},
		{"SameNameOtherCase", `{"a":1,"A":2}`, ""},
		{"NotJSON", `{"a":`, "is not valid JSON"},
		{"TrailingData", `{} {}`, "is not valid JSON"},
		{"TooDeep", nest(eventagg.MaxPayloadDepth + 1), "nests deeper than 64 levels"},
		{"DeepArrays", strings.Repeat("[", 100000), "nests deeper than 64 levels"},
		{"DuplicateKey", `{"amount":1,"amount":1000}`, `duplicate key "amount"`},
		{"DuplicateEscapedKey", `{"a":{"amount":1,"\u0061mount":2}}`, `duplicate key "amount"`},
		{"HugeNumber", `{"n":1e400}`, "number 1e400 overflows a 64-bit float"},
		{"HugeNegative", `[-2e308]`, "overflows"},
		{"InvalidUTF8", "{\"a\":\"\xff\"}", "invalid UTF-8"},
		{"LoneSurrogate", `{"a":"\ud800"}`, "lone UTF-16 surrogate"},
		{"RawControl", "\"a\x01\"", "is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := eventagg.Event{Topic: "t", EventID: "1", Payload: json.RawMessage(tt.payload)}
			err := e.Validate(3)
			if tt.reason == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			var verr *eventagg.ValidationError
			if !errors.As(err, &verr) || verr.Field != "payload" || verr.Index != 3 || !strings.Contains(verr.Reason, tt.reason) {
				t.Errorf("Validate() = %v, want a ValidationError for event 3's payload saying %q", err, tt.reason)
			}
		})
	}
}

// validName is the rule for topics, event IDs and sources, written out
// independently of the package.
func validName(s string, required bool) bool {
	if s == "" {
		return !required
	}
	return len(s) <= eventagg.MaxKeyLen && utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// FuzzValidate checks Event.Validate: it never panics, accepts exactly the
// names the documented rule allows, accepts only payloads that are valid
// UTF-8 JSON, and reports errors as a *ValidationError naming a field.
func FuzzValidate(f *testing.F) {
	f.Add("orders", "o-1", "shop", []byte(`{"total":42}`), int64(0))
	f.Add("t", " ", "", []byte(nil), int64(1))
	f.Add("t\x00", "\xff", "\x1b", []byte(`null`), int64(-1))
	f.Add("t", "1", "", []byte(`{"a":1,"a":2}`), int64(1<<62))
	f.Add("t", "1", "", []byte(`[1e400]`), int64(0))
	f.Add("t", "1", "", []byte("\"\xed\xa0\x80\""), int64(0))
	f.Add("t", "1", "", []byte(`"\udbff\udfff"`), int64(0))
	f.Fuzz(func(t *testing.T, topic, id, source string, payload []byte, ts int64) {
		e := eventagg.Event{Topic: topic, EventID: id, Source: source, Payload: payload, Timestamp: time.Unix(0, ts)}
		err := e.Validate(7)
		if err == nil {
			switch {
			case !validName(topic, true), !validName(id, true), strings.TrimSpace(id) == "", !validName(source, false):
				t.Fatalf("Validate accepted topic %q, event_id %q, source %q", topic, id, source)
			case len(payload) > 0 && (!json.Valid(payload) || !utf8.Valid(payload)):
				t.Fatalf("Validate accepted payload %q", payload)
			}
			if len(payload) > 0 {
				var v any
				if err := json.Unmarshal(payload, &v); err != nil {
					t.Fatalf("Validate accepted payload %q that encoding/json cannot decode: %v", payload, err)
				}
			}
			return
		}
		var verr *eventagg.ValidationError
		if !errors.As(err, &verr) || verr.Index != 7 || verr.Reason == "" {
			t.Fatalf("Validate() = %#v, want a *ValidationError for index 7 with a reason", err)
		}
		valid := map[string]bool{
			"topic":    validName(topic, true),
			"event_id": validName(id, true) && strings.TrimSpace(id) != "",
			"source":   validName(source, false),
		}
		switch verr.Field {
		case "topic", "event_id", "source":
			if valid[verr.Field] {
				t.Fatalf("Validate rejected a valid %s: %v", verr.Field, err)
			}
		case "payload":
			if len(payload) == 0 {
				t.Fatalf("Validate rejected an empty payload: %v", err)
			}
		case "timestamp":
		default:
			t.Fatalf("Validate() error names unknown field %q", verr.Field)
		}
	})
}
