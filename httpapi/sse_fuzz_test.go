package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/eventagg/eventagg"
)

// FuzzSSERoundTrip checks the follow stream end to end, without a network:
// an event written by the server's encoder (appendEvent, appendSSE) and read
// by the client's parser (sseReader, decodeStreamed) comes back the same,
// except that line breaks in its payload's white space come back as \n.
func FuzzSSERoundTrip(f *testing.F) {
	f.Add("t", "1", `{"a":1}`, int64(1))
	f.Add("orders", "o-2", "{\n\"a\":\r\n[1,\r2]\n}", int64(42))
	f.Add("q\"uo\\te", "\u2028", " \r\r\n\"x\"\n\n", int64(1<<62))
	f.Fuzz(func(t *testing.T, topic, id, payload string, seq int64) {
		if seq <= 0 || !json.Valid([]byte(payload)) || !utf8.ValidString(topic) || !utf8.ValidString(id) {
			return
		}
		e := eventagg.Event{Topic: topic, EventID: id, Payload: json.RawMessage(payload), Seq: seq}
		stream := appendSSE(nil, seq, appendEvent(nil, &e))
		stream = append(stream, ": keep-alive\n\n"...) // a heartbeat after it: no event
		r := newSSEReader(bytes.NewReader(stream), 1<<20)
		data, gotID, err := r.next()
		if err != nil {
			t.Fatalf("reading %q: %v", stream, err)
		}
		got, err := decodeStreamed(data, gotID)
		if err != nil {
			t.Fatalf("decoding %q: %v", data, err)
		}
		wantPayload := strings.TrimSpace(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(payload))
		if got.Topic != topic || got.EventID != id || got.Seq != seq || string(got.Payload) != wantPayload {
			t.Fatalf("round trip of %+v (payload %q) gave %+v (payload %q); the stream: %q", e, payload, got, got.Payload, stream)
		}
		if _, _, err := r.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the event and a heartbeat: %v, want the end of the stream", err)
		}
	})
}
