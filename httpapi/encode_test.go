package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/google/go-cmp/cmp"
)

// FuzzAppendEvent checks that appendEvent writes valid JSON that decodes to
// the same event, with the payload kept byte for byte.
func FuzzAppendEvent(f *testing.F) {
	f.Add("orders", "o-1", "svc", ` {"a" : [1, 2]} `, int64(1), int64(5))
	f.Add("q\"uo\\te", "\u2028\u2029<>&", "\x7f", `"\u00e9"`, int64(-1), int64(0))
	f.Add("ctl\x01\x1f", "é😀", "", ``, int64(0), int64(1<<62))
	f.Fuzz(func(t *testing.T, topic, id, source, payload string, nanos, seq int64) {
		if !json.Valid([]byte(payload)) {
			payload = ""
		}
		e := eventagg.Event{Topic: topic, EventID: id, Source: source, Payload: json.RawMessage(payload), Seq: seq}
		if nanos != 0 {
			e.Timestamp = time.Unix(0, nanos).UTC()
		}
		out := appendEvent(nil, &e)
		if !json.Valid(out) {
			t.Fatalf("appendEvent wrote invalid JSON: %s", out)
		}
		var got struct {
			eventagg.Event
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		want := e
		want.Topic, want.EventID, want.Source = validString(topic), validString(id), validString(source)
		want.Payload, got.Event.Payload = nil, nil
		if diff := cmp.Diff(want, got.Event); diff != "" {
			t.Errorf("round trip mismatch (-want +got):\n%s", diff)
		}
		// Decoding drops the white space around a value, not inside it.
		if trimmed := strings.TrimSpace(payload); string(got.Payload) != trimmed && !(trimmed == "" && got.Payload == nil) {
			t.Errorf("payload %q came back as %q", payload, got.Payload)
		}
	})
}

// validString replaces invalid UTF-8 as encoding/json does.
func validString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	json.Unmarshal(b, &out)
	return out
}
