package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventagg/eventagg/httpapi"
)

// post sends body to POST /publish with the given headers ("" leaves one out).
func (s *server) post(t *testing.T, body io.Reader, contentType, encoding string) response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/publish", body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	rec := httptest.NewRecorder()
	checkedHandler(t, s.h).ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// endlessGzip is a gzip stream of zeros that never ends: a gzip bomb of
// unbounded size. Closing the returned reader stops it.
func endlessGzip() *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		zeros := make([]byte, 64<<10)
		for {
			if _, err := zw.Write(zeros); err != nil {
				return
			}
		}
	}()
	return pr
}

func TestHostileInputIsRefused(t *testing.T) {
	const valid = `{"topic":"a","event_id":"1"}`
	ev := func(extra string) string { return `{"topic":"a","event_id":"1",` + extra + `}` }
	tests := []struct {
		name        string
		body        func(t *testing.T) io.Reader
		contentType string
		encoding    string
		status      int
		msg         string
	}{
		{"InvalidUTF8InTopic", str("{\"topic\":\"a\xff\",\"event_id\":\"1\"}"), "application/json", "", 400, "invalid UTF-8"},
		{"InvalidUTF8InPayload", str(ev("\"payload\":\"\xc0\xaf\"")), "application/json", "", 400, "invalid UTF-8"},
		{"InvalidUTF8InIgnoredField", str(ev("\"note\":\"\xff\"")), "application/json", "", 400, "invalid UTF-8"},
		{"EscapedNULInEventID", str(`{"topic":"a","event_id":"x\u0000y"}`), "application/json", "", 400, "control character"},
		{"RawNULInTopic", str("{\"topic\":\"a\x00\",\"event_id\":\"1\"}"), "application/json", "", 400, "control character"},
		{"LoneSurrogate", str(`{"topic":"a","event_id":"\ud800"}`), "application/json", "", 400, "surrogate"},
		{"DeepPayload", str(ev(`"payload":` + strings.Repeat("[", 65) + strings.Repeat("]", 65))), "", "", 400, "nests deeper than 64 levels"},
		{"DeepIgnoredField", str(ev(`"x":` + strings.Repeat(`{"a":`, 100))), "", "", 400, "nests deeper than 64 levels"},
		{"NestingBomb", str(`[` + strings.Repeat("[", 1000)), "", "", 400, "nests deeper"},
		{"HugeNumber", str(ev(`"payload":{"amount":1e400}`)), "", "", 400, "overflows a 64-bit float"},
		{"HugeInteger", str(ev(`"payload":1` + strings.Repeat("0", 400))), "", "", 400, "overflows a 64-bit float"},
		{"DuplicateKey", str(`{"topic":"a","event_id":"1","event_id":"2"}`), "", "", 400, "given twice"},
		{"DuplicateKeyOtherCase", str(`[{"topic":"a","TOPIC":"b","event_id":"1"}]`), "", "", 400, "given twice"},
		{"DuplicateKeyInPayload", str(ev(`"payload":{"to":"alice","to":"mallory"}`)), "", "", 400, `duplicate key "to"`},
		{"TooLarge", str(`[` + strings.Repeat(" ", 2000) + valid + `]`), "", "", 413, "limit of 1024 bytes"},
		{"TextPlain", str(valid), "text/plain", "", 415, "must be application/json"},
		{"FormEncoded", str(valid), "application/x-www-form-urlencoded", "", 415, "Content-Type: application/json"},
		{"MalformedContentType", str(valid), "application/json; =", "", 415, "not a media type"},
		{"Latin1", str(valid), "application/json; charset=iso-8859-1", "", 415, "UTF-8"},
		{"UnknownEncoding", str(valid), "", "br", 415, `Content-Encoding "br" is not supported`},
		{"StackedEncodings", func(t *testing.T) io.Reader { return bytes.NewReader(gzipped(t, string(gzipped(t, valid)))) }, "", "gzip, gzip", 415, "not supported"},
		{"NotGzip", str(valid), "", "gzip", 400, "not valid gzip"},
		{"CorruptGzip", func(t *testing.T) io.Reader {
			g := gzipped(t, valid)
			for i := 10; i < len(g)-8; i++ {
				g[i] = 0xff
			}
			return bytes.NewReader(g)
		}, "", "gzip", 400, "not valid gzip"},
		{"TruncatedGzip", func(t *testing.T) io.Reader { g := gzipped(t, valid); return bytes.NewReader(g[:len(g)-6]) }, "", "gzip", 400, "request body"},
		{"GzipOverLimit", func(t *testing.T) io.Reader { return bytes.NewReader(gzipped(t, `[`+strings.Repeat(" ", 1024)+`]`)) }, "", "gzip", 413, "decompressed request body is over the limit of 1024 bytes"},
		{"GzipBomb", func(t *testing.T) io.Reader {
			r := endlessGzip()
			t.Cleanup(func() { r.Close() })
			return r
		}, "application/json", "gzip", 413, "decompressed request body is over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil, nil, &httpapi.Options{MaxBodyBytes: 1024})
			resp := s.post(t, tt.body(t), tt.contentType, tt.encoding)
			var body httpapi.ErrorResponse
			resp.decode(t, &body)
			if resp.status != tt.status || !strings.Contains(body.Error, tt.msg) {
				t.Errorf("status %d %q; want %d saying %q", resp.status, body.Error, tt.status, tt.msg)
			}
			switch code := map[int]string{413: httpapi.CodeTooLarge, 415: httpapi.CodeUnsupported}[tt.status]; {
			case code != "" && body.Code != code:
				t.Errorf("code %q; want %q", body.Code, code)
			case tt.status == 400 && body.Code != httpapi.CodeBadRequest && (body.Code != httpapi.CodeInvalidEvent || body.Index == nil):
				t.Errorf("code %q, index %v; want bad_request, or invalid_event with an index", body.Code, body.Index)
			}
			if tt.status == 415 && resp.header.Get("Accept-Encoding") != "gzip" {
				t.Errorf("415 without Accept-Encoding: gzip")
			}
			if st := s.stats(t); st.Received != 0 {
				t.Errorf("a refused request was counted: %+v", st.Counts)
			}
		})
	}
}

func str(s string) func(*testing.T) io.Reader {
	return func(*testing.T) io.Reader { return strings.NewReader(s) }
}

func TestAcceptedBodyForms(t *testing.T) {
	const valid = `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2"}]`
	tests := []struct {
		name, contentType, encoding string
		body                        []byte
	}{
		{"NoContentType", "", "", []byte(valid)},
		{"JSONWithCharset", "application/json; charset=UTF-8", "", []byte(valid)},
		{"StructuredSuffix", "application/cloudevents-batch+json", "", []byte(valid)},
		{"Identity", "application/json", "identity", []byte(valid)},
		{"Gzip", "application/json", "gzip", gzipped(t, valid)},
		{"XGzipMixedCase", "application/json", "X-GZIP", gzipped(t, valid)},
		{"GzipExactlyAtLimit", "application/json", "gzip", gzipped(t, valid+strings.Repeat(" ", 1024-len(valid)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, nil, nil, &httpapi.Options{MaxBodyBytes: 1024})
			resp := s.post(t, bytes.NewReader(tt.body), tt.contentType, tt.encoding)
			if resp.status != http.StatusOK || s.stats(t).UniqueProcessed != 2 {
				t.Errorf("status %d %s, stats %+v; want 200 and 2 events stored", resp.status, resp.body, s.stats(t).Counts)
			}
		})
	}
}
