package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func TestParseSecurityConfig(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tokenFile := file("token", "from-file\n")
	emptyFile := file("empty", " \n")
	runConfigCases(t, []configCase{
		{"Defaults", nil, nil, func(c *config) bool {
			return c.token == "" && !c.tokenReads && c.tlsCert == "" && c.maxDBSize == 0 && c.busyTimeout == 5*time.Second &&
				c.readHeader == 10*time.Second && c.readTimeout == 60*time.Second && c.idleTimeout == 120*time.Second
		}, ""},
		{"TokenFlag", []string{"-token", "abc", "-token-reads"}, nil, func(c *config) bool { return c.token == "abc" && c.tokenReads }, ""},
		{"TokenEnv", nil, map[string]string{"EVENTAGG_TOKEN": "from-env", "EVENTAGG_TOKEN_READS": "true"},
			func(c *config) bool { return c.token == "from-env" && c.tokenReads }, ""},
		{"TokenFileTrimmed", []string{"-token-file", tokenFile}, nil, func(c *config) bool { return c.token == "from-file" }, ""},
		{"TokenFileEnv", nil, map[string]string{"EVENTAGG_TOKEN_FILE": tokenFile}, func(c *config) bool { return c.token == "from-file" }, ""},
		{"TimeoutsAndLimits", []string{"-max-db-size", "1048576", "-busy-timeout", "1s", "-read-header-timeout", "2s",
			"-read-timeout", "3s", "-idle-timeout", "4s"}, nil, func(c *config) bool {
			return c.maxDBSize == 1<<20 && c.busyTimeout == time.Second && c.readHeader == 2*time.Second &&
				c.readTimeout == 3*time.Second && c.idleTimeout == 4*time.Second
		}, ""},
		{"TLSEnv", nil, map[string]string{"EVENTAGG_TLS_CERT": "c.pem", "EVENTAGG_TLS_KEY": "k.pem"},
			func(c *config) bool { return c.tlsCert == "c.pem" && c.tlsKey == "k.pem" }, ""},
		{"TokenAndTokenFile", []string{"-token", "a", "-token-file", tokenFile}, nil, nil, "not both"},
		{"MissingTokenFile", []string{"-token-file", filepath.Join(dir, "nope")}, nil, nil, "-token-file"},
		{"EmptyTokenFile", []string{"-token-file", emptyFile}, nil, nil, "is empty"},
		{"TokenWithSpace", []string{"-token", "two words"}, nil, nil, "spaces"},
		{"TokenReadsWithoutToken", []string{"-token-reads"}, nil, nil, "needs a token"},
		{"CertWithoutKey", []string{"-tls-cert", "c.pem"}, nil, nil, "give both or neither"},
		{"KeyWithoutCert", nil, map[string]string{"EVENTAGG_TLS_KEY": "k.pem"}, nil, "give both or neither"},
		{"ZeroTimeout", []string{"-read-timeout", "0s"}, nil, nil, "must be positive"},
		{"NegativeSize", []string{"-max-db-size", "-1"}, nil, nil, "must not be negative"},
	})
}

// TestTokenProtectsServer runs the server with a token from a file: publishes
// need it, reads and the status page need it with -token-reads, /health,
// /openapi.json and -healthcheck never.
func TestTokenProtectsServer(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok-"+strings.Repeat("x", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := "tok-" + strings.Repeat("x", 40)
	env := map[string]string{"EVENTAGG_TOKEN_FILE": tokenFile}
	url, _, logs := MustRunMain(t, env, "-addr", "127.0.0.1:0", "-db", filepath.Join(dir, "events.db"), "-token-reads")

	call := func(method, path, authorization string) (int, http.Header, string) {
		req, err := http.NewRequestWithContext(t.Context(), method, url+path, strings.NewReader(`{"topic":"a","event_id":"1"}`))
		if err != nil {
			t.Fatal(err)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		if path == "/" { // as a browser asks for the status page
			req.Header.Set("Accept", "text/html")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(data)
	}
	for _, tt := range []struct {
		method, path, authorization string
		status                      int
	}{
		{"POST", "/publish", "", 401},
		{"POST", "/publish", "Bearer wrong", 401},
		{"GET", "/stats", "", 401},
		{"GET", "/events", "Bearer " + token + "!", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/", "", 401},
		{"GET", "/health", "", 200},
		{"GET", "/openapi.json", "", 200},
		{"POST", "/publish", "Bearer " + token, 200},
		{"GET", "/stats", "Bearer " + token, 200},
		{"GET", "/", "Bearer " + token, 200},
	} {
		status, header, body := call(tt.method, tt.path, tt.authorization)
		if status != tt.status {
			t.Errorf("%s %s with %q = %d %s, want %d", tt.method, tt.path, tt.authorization, status, body, tt.status)
		}
		if status == 401 {
			var e httpapi.ErrorResponse
			if !strings.HasPrefix(header.Get("WWW-Authenticate"), `Bearer realm="eventagg"`) || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("401 with WWW-Authenticate %q and body %s; want a Bearer challenge and a JSON error", header.Get("WWW-Authenticate"), body)
			}
		}
	}
	addr := strings.TrimPrefix(url, "http://")
	if err := run(t.Context(), []string{"-healthcheck", "-addr", addr}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Errorf("-healthcheck with a token configured = %v, want nil", err)
	}
	if strings.Contains(logs.all.String(), token) {
		t.Errorf("the log holds the token")
	}
	client, err := httpapi.NewClient(url, &httpapi.ClientOptions{Token: token, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.Stats(t.Context())
	if err != nil || st.Received != 1 {
		t.Errorf("Stats() = %+v, %v; want only the authorised publish counted", st.Counts, err)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files in dir, and returns their paths and a pool that trusts it.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "eventagg " + name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeCert(t, dir, "server")
	otherCert, otherKey, _ := writeCert(t, dir, "other")
	env := map[string]string{"EVENTAGG_TLS_CERT": certFile, "EVENTAGG_TLS_KEY": keyFile}
	url, _, logs := MustRunMain(t, env, "-addr", "127.0.0.1:0", "-db", filepath.Join(dir, "events.db"))
	addr := strings.TrimPrefix(url, "http://")
	if !strings.Contains(logs.all.String(), `"tls":true`) {
		t.Errorf("the listening record does not say tls:\n%s", logs.all.String())
	}

	client, err := httpapi.NewClient("https://"+addr, &httpapi.ClientOptions{MaxAttempts: 1, HTTPClient: &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := client.Publish(t.Context(), eventagg.Event{Topic: "tls", EventID: "1"}); err != nil || res.Processed != 1 {
		t.Errorf("Publish over TLS = %+v, %v", res, err)
	}

	resp, err := http.Get(url + "/health") // plain HTTP to the TLS port
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the TLS server = 200, want a refusal")
		}
	}
	untrusting, _ := httpapi.NewClient("https://"+addr, &httpapi.ClientOptions{MaxAttempts: 1})
	var unknownAuthority x509.UnknownAuthorityError
	if err := untrusting.Health(t.Context()); !errors.As(err, &unknownAuthority) {
		t.Errorf("Health from a client that does not trust the certificate = %v, want an unknown authority error", err)
	}

	healthcheck := func(env map[string]string) error {
		return run(t.Context(), []string{"-healthcheck", "-addr", addr}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	if err := healthcheck(env); err != nil {
		t.Errorf("-healthcheck with the server's certificate = %v, want nil", err)
	}
	if err := healthcheck(map[string]string{"EVENTAGG_TLS_CERT": otherCert, "EVENTAGG_TLS_KEY": otherKey}); err == nil {
		t.Error("-healthcheck pinned to another certificate = nil, want an error")
	}
	if err := healthcheck(nil); err == nil {
		t.Error("-healthcheck over plain HTTP against the TLS server = nil, want an error")
	}

	err = run(t.Context(), []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(dir, "x.db"), "-tls-cert", certFile, "-tls-key", otherKey},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-tls-cert") {
		t.Errorf("run with a key that does not match the certificate = %v, want an error naming -tls-cert", err)
	}
}

// TestSQLIsParameterised publishes topics and event IDs made of SQL through
// HTTP and reads them back exactly, filtered by topic: nothing is
// interpreted, and LIKE wildcards match only themselves.
func TestSQLIsParameterised(t *testing.T) {
	hostile := []string{
		`'; DROP TABLE events; --`,
		`Robert'); DROP TABLE topics;--`,
		`" OR "1"="1`,
		`' OR '1'='1' --`,
		`x' UNION SELECT name, 1, 1, 1, 1, 1 FROM sqlite_master --`,
		`1; UPDATE topics SET received = 0`,
		`%`, `_`, `a%b`, `\`, `''`, `;`, `?`, `?1`, `:name`, `@p`, `$1`, `/* */`, "`x`", `[y]`,
		`SELECT * FROM events`, `ATTACH DATABASE '/tmp/x' AS y`, `PRAGMA user_version=99`,
	}
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"))
	client := newClient(t, url)
	ctx := t.Context()
	var batch []eventagg.Event
	for _, topic := range hostile {
		for _, id := range hostile {
			batch = append(batch, eventagg.Event{Topic: topic, EventID: id, Source: id,
				Payload: json.RawMessage(`{"sql":` + jsonString(id) + `}`)})
		}
	}
	for _, resend := range []bool{false, true} {
		res, err := client.Publish(ctx, batch...)
		want := httpapi.PublishResponse{Processed: len(batch)}
		if resend {
			want = httpapi.PublishResponse{Duplicates: len(batch)}
		}
		if err != nil || res.Processed != want.Processed || res.Duplicates != want.Duplicates {
			t.Fatalf("Publish (resend %v) = %+v, %v; want %+v", resend, res, err, want)
		}
	}
	for _, topic := range hostile {
		var ids []string
		for e, err := range client.Events(ctx, eventagg.Query{Topic: topic}) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Topic != topic || e.Source != e.EventID || string(e.Payload) != `{"sql":`+jsonString(e.EventID)+`}` {
				t.Errorf("listing topic %q returned %+v", topic, e)
			}
			ids = append(ids, e.EventID)
		}
		if !slices.Equal(ids, hostile) {
			t.Errorf("topic %q lists ids %q, want %q", topic, ids, hostile)
		}
	}
	st, err := client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(hostile))
	if st.UniqueProcessed != n*n || st.Received != 2*n*n || len(st.Topics) != len(hostile) {
		t.Errorf("Stats() = %+v with %d topics; want %d stored, %d received, %d topics", st.Counts, len(st.Topics), n*n, 2*n*n, n)
	}
	for _, topic := range hostile {
		if c := st.Topics[topic]; c.UniqueProcessed != n || c.DuplicateDropped != n {
			t.Errorf("topic %q counters %+v", topic, c)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
