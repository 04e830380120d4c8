package httpapi_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func (s *server) doAuth(t *testing.T, method, target, authorization string) response {
	t.Helper()
	var body *strings.Reader
	if method == "POST" {
		body = strings.NewReader(`{"topic":"a","event_id":"1"}`)
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequestWithContext(t.Context(), method, target, body)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	checkedHandler(t, s.h).ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func TestBearerToken(t *testing.T) {
	const token = "s3cret-token-with-enough-entropy"
	tests := []struct {
		name          string
		reads         bool
		method, path  string
		authorization string
		status        int
		challenge     string // WWW-Authenticate on 401
	}{
		{"PublishWithoutToken", false, "POST", "/publish", "", 401, `Bearer realm="eventagg"`},
		{"PublishWrongToken", false, "POST", "/publish", "Bearer " + token + "x", 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"PublishTokenPrefix", false, "POST", "/publish", "Bearer " + token[:10], 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"PublishOtherScheme", false, "POST", "/publish", "Basic " + token, 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"PublishNoScheme", false, "POST", "/publish", token, 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"PublishEmptyBearer", false, "POST", "/publish", "Bearer ", 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"PublishWithToken", false, "POST", "/publish", "Bearer " + token, 200, ""},
		{"SchemeIsCaseInsensitive", false, "POST", "/publish", "bearer " + token, 200, ""},
		{"ReadsOpenByDefault", false, "GET", "/events", "", 200, ""},
		{"StatsOpenByDefault", false, "GET", "/stats", "", 200, ""},
		{"EventsNeedToken", true, "GET", "/events", "", 401, `Bearer realm="eventagg"`},
		{"StatsNeedToken", true, "GET", "/stats", "Bearer nope", 401, `Bearer realm="eventagg", error="invalid_token"`},
		{"MetricsNeedToken", true, "GET", "/metrics", "", 401, `Bearer realm="eventagg"`},
		{"EventsWithToken", true, "GET", "/events", "Bearer " + token, 200, ""},
		{"HealthStaysOpen", true, "GET", "/health", "", 200, ""},
		{"WrongMethodIs405", true, "GET", "/publish", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil, nil, &httpapi.Options{Token: token, TokenReads: tt.reads})
			resp := s.doAuth(t, tt.method, tt.path, tt.authorization)
			if resp.status != tt.status || resp.header.Get("WWW-Authenticate") != tt.challenge {
				t.Errorf("%s %s = %d, WWW-Authenticate %q; want %d, %q",
					tt.method, tt.path, resp.status, resp.header.Get("WWW-Authenticate"), tt.status, tt.challenge)
			}
			if tt.status == 401 {
				var body httpapi.ErrorResponse
				resp.decode(t, &body)
				if body.Error == "" || body.Code != httpapi.CodeUnauthorized || strings.Contains(string(resp.body), token) {
					t.Errorf("401 body %s: want a JSON error, code unauthorized, that does not echo the token", resp.body)
				}
			}
			stored := int64(0)
			if tt.method == "POST" && tt.status == 200 {
				stored = 1
			}
			if st := s.stats(t); st.Received != stored {
				t.Errorf("Received = %d, want %d", st.Received, stored)
			}
		})
	}
}

func TestNoTokenConfiguredIgnoresAuthorization(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{TokenReads: true})
	for _, target := range []string{"/publish", "/events", "/stats"} {
		method := "GET"
		if target == "/publish" {
			method = "POST"
		}
		if resp := s.doAuth(t, method, target, "Bearer whatever"); resp.status != 200 {
			t.Errorf("%s %s = %d %s; want 200 without a configured token", method, target, resp.status, resp.body)
		}
	}
}

func TestClientSendsToken(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{Token: "t0k3n", TokenReads: true})
	ts := httptest.NewServer(checkedHandler(t, s.h))
	defer ts.Close()
	good, err := httpapi.NewClient(ts.URL, &httpapi.ClientOptions{Token: "t0k3n", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Publish(t.Context(), eventagg.Event{Topic: "a", EventID: "1"}); err != nil {
		t.Errorf("Publish with the token: %v", err)
	}
	if _, err := good.Stats(t.Context()); err != nil {
		t.Errorf("Stats with the token: %v", err)
	}
	bad, err := httpapi.NewClient(ts.URL, &httpapi.ClientOptions{Token: "wrong", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Publish(t.Context(), eventagg.Event{Topic: "a", EventID: "2"})
	var apiErr *httpapi.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Temporary() {
		t.Errorf("Publish with a wrong token = %v; want a 401 APIError, not retried", err)
	}
	if err := bad.Health(t.Context()); err != nil {
		t.Errorf("Health without the token = %v, want nil", err)
	}
}
