package httpapi_test

// The OpenAPI document (openapi.json) is checked with kin-openapi, a
// test-only dependency: the document is valid OpenAPI 3.1, and every request
// that the handler tests send through their helpers (server.do,
// server.doWith, server.doAuth, server.page, startHTTP, the in-process
// client transport), with its answer, is checked against it by
// checkedHandler, so that the document cannot drift from the code.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/eventagg/eventagg/httpapi"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/go-cmp/cmp"
)

// spec is the OpenAPI document loaded for checking answers: its response
// schemas are made strict (see strictify), so that a field the code writes
// and the document does not describe fails the test.
type spec struct {
	doc    *openapi3.T
	router routers.Router
}

// loadDoc loads and validates the embedded document.
func loadDoc() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(httpapi.OpenAPI())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		return nil, err
	}
	return doc, nil
}

var loadSpec = sync.OnceValues(func() (*spec, error) {
	doc, err := loadDoc()
	if err != nil {
		return nil, err
	}
	seen := make(map[*openapi3.Schema]bool)
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, resp := range op.Responses.Map() {
				for _, mt := range resp.Value.Content {
					strictify(mt.Schema, false, seen)
				}
			}
		}
	}
	for _, resp := range doc.Components.Responses {
		for _, mt := range resp.Value.Content {
			strictify(mt.Schema, false, seen)
		}
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &spec{doc: doc, router: router}, nil
})

func mustSpec(tb testing.TB) *spec {
	tb.Helper()
	sp, err := loadSpec()
	if err != nil {
		tb.Fatalf("openapi.json: %v", err)
	}
	return sp
}

// strictify forbids, in the answers' schemas, the object members that the
// document does not name (unevaluatedProperties: false), unless a schema
// says what other members may be (additionalProperties). The document
// itself leaves answers open, as clients must expect fields to be added;
// the tests hold the code to exactly what the document says. A member of
// allOf, oneOf or anyOf is not made strict itself (the schema that
// composes it is), but its members' schemas are.
func strictify(ref *openapi3.SchemaRef, member bool, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil {
		return
	}
	s := ref.Value
	objectLike := s.Type.Is("object") || len(s.Properties) > 0 || len(s.AllOf) > 0
	if !member && objectLike && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil &&
		s.UnevaluatedProperties.Has == nil && s.UnevaluatedProperties.Schema == nil {
		no := false
		s.UnevaluatedProperties.Has = &no
	}
	if seen[s] {
		return
	}
	seen[s] = true
	for _, p := range s.Properties {
		strictify(p, false, seen)
	}
	strictify(s.Items, false, seen)
	strictify(s.AdditionalProperties.Schema, false, seen)
	for _, list := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, m := range list {
			strictify(m, true, seen)
		}
	}
}

// checkedHandler returns h wrapped so that every request it serves, and
// its answer, is checked against the OpenAPI document: a mismatch fails tb.
//
//   - The answer's status must be documented for the operation, and its
//     headers and body must match (bodies over 8 MiB, cut short or of HEAD
//     requests are not read, their headers are); a follow stream's events
//     must each be an Event.
//   - A request that the document rejects must not be answered 2xx.
//   - A path the document does not list must be answered 404, and a
//     method it does not list for the path 405 with the document's methods
//     in Allow, or 404 where the path item says so (x-other-methods: 404,
//     the status page's /).
//
// It may be used from the handler's goroutines (an httptest.Server). An
// exchange that ends after the test (a stream its client left open) is not
// reported.
func checkedHandler(tb testing.TB, h http.Handler) http.Handler {
	sp := mustSpec(tb)
	rep := &reporter{TB: tb}
	tb.Cleanup(rep.end)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &teeBody{rc: r.Body}
		if r.Body != nil {
			r.Body = body
		}
		c := &capture{ResponseWriter: w}
		h.ServeHTTP(c, r)
		if c.status == 0 { // nothing written
			c.status, c.header = http.StatusOK, w.Header().Clone()
		}
		sp.check(rep, r, body, c)
	})
}

// reporter passes errors on to its test until the test ends.
type reporter struct {
	testing.TB
	mu    sync.Mutex
	ended bool
}

func (r *reporter) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ended {
		r.TB.Errorf(format, args...)
	}
}

func (r *reporter) end() {
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
}

const maxCheckedBody = 8 << 20

// teeBody keeps what the handler reads of a request body.
type teeBody struct {
	rc   io.ReadCloser
	buf  bytes.Buffer
	eof  bool // all of the body is in buf
	over bool // more than maxCheckedBody
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.buf.Len()+n > maxCheckedBody {
		b.over = true
	} else {
		b.buf.Write(p[:n])
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

// capture keeps the status, headers and body of an answer as they go to
// the client.
type capture struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
	over   bool // the body is over maxCheckedBody
	failed bool // a write failed: the client did not get the whole answer
}

func (c *capture) WriteHeader(code int) {
	if c.status == 0 {
		c.status, c.header = code, c.ResponseWriter.Header().Clone()
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status, c.header = http.StatusOK, c.ResponseWriter.Header().Clone()
	}
	n, err := c.ResponseWriter.Write(b)
	if c.body.Len()+n > maxCheckedBody {
		c.over = true
	} else if !c.over {
		c.body.Write(b[:n])
	}
	if err != nil {
		c.failed = true
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the writer beneath.
func (c *capture) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// authenticate is the check of the bearer scheme: a request that names it
// must carry a token. (Whether the token is right is the server's to say.)
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, tok, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// check checks one exchange; see checkedHandler.
func (sp *spec) check(tb testing.TB, r *http.Request, body *teeBody, c *capture) {
	if c.status == 499 { // the client went away: nothing reached it
		return
	}
	what := r.Method + " " + r.URL.RequestURI()
	answer := func() string {
		s := strconv.Itoa(c.status) + " " + c.body.String()
		if len(s) > 300 {
			s = s[:300] + "..."
		}
		return s
	}
	route, pathParams, err := sp.router.FindRoute(r)
	switch {
	case errors.Is(err, routers.ErrPathNotFound):
		if c.status != http.StatusNotFound {
			tb.Errorf("openapi: %s: the document has no such path, but the server answered %s", what, answer())
		}
		sp.checkComponent(tb, r, "NotFound", c)
		return
	case errors.Is(err, routers.ErrMethodNotAllowed) && otherMethods(sp.doc.Paths.Find(r.URL.Path)) == http.StatusNotFound:
		if c.status != http.StatusNotFound {
			tb.Errorf("openapi: %s: the document answers the path's other methods with 404, but the server answered %s", what, answer())
		}
		sp.checkComponent(tb, r, "NotFound", c)
		return
	case errors.Is(err, routers.ErrMethodNotAllowed):
		if c.status != http.StatusMethodNotAllowed {
			tb.Errorf("openapi: %s: the document has no such operation, but the server answered %s", what, answer())
		}
		sp.checkComponent(tb, r, "MethodNotAllowed", c)
		if item := sp.doc.Paths.Find(r.URL.Path); item != nil {
			if want, got := methods(item), c.header.Get("Allow"); got != want {
				tb.Errorf("openapi: %s: Allow %q, but the document lists %q for the path", what, got, want)
			}
		}
		return
	case err != nil:
		tb.Errorf("openapi: %s: finding the operation: %v", what, err)
		return
	}

	// The request.
	opts := &openapi3filter.Options{AuthenticationFunc: authenticate, MultiError: true}
	vr := r.Clone(context.WithoutCancel(r.Context()))
	// The server reads a body without Content-Type, or with a structured
	// syntax suffix (application/*+json, RFC 6839), as JSON, as the
	// request body's description says: OpenAPI has no media range for them.
	if ct := vr.Header.Get("Content-Type"); r.Method == http.MethodPost && ct == "" {
		vr.Header.Set("Content-Type", "application/json")
	} else if mt, params, err := mime.ParseMediaType(ct); err == nil && strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json") {
		vr.Header.Set("Content-Type", mime.FormatMediaType("application/json", params))
	}
	reqBody := body.buf.Bytes()
	if enc := strings.ToLower(strings.TrimSpace(vr.Header.Get("Content-Encoding"))); (enc == "gzip" || enc == "x-gzip") && body.eof {
		zr, err := gzip.NewReader(bytes.NewReader(reqBody))
		if err == nil {
			reqBody, err = io.ReadAll(io.LimitReader(zr, maxCheckedBody))
		}
		if err != nil {
			reqBody = nil // not gzip: the document does not say what it is
		}
	}
	if !body.eof || body.over || len(reqBody) >= maxCheckedBody {
		opts.ExcludeRequestBody = true // not all of it was seen
	}
	vr.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: pathParams, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(vr.Context(), in); err != nil && c.status < 300 {
		tb.Errorf("openapi: %s: the server answered %s to a request the document rejects: %v", what, answer(), err)
	}

	// The answer.
	ropts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	if r.Method == http.MethodHead || c.over || c.failed || r.Context().Err() != nil {
		ropts.ExcludeResponseBody = true
	}
	if r.Method == http.MethodHead {
		// kin-openapi checks nothing of a HEAD answer: check its status
		// and headers as those of the HEAD operation, asked for by GET.
		in = &openapi3filter.RequestValidationInput{Request: vr.Clone(vr.Context()), PathParams: pathParams, Route: route, Options: opts}
		in.Request.Method = http.MethodGet
	}
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: c.status, Header: c.header,
		Body: io.NopCloser(bytes.NewReader(c.body.Bytes())), Options: ropts,
	}
	if err := openapi3filter.ValidateResponse(vr.Context(), rin); err != nil {
		tb.Errorf("openapi: %s: the answer %s does not match the document: %v", what, answer(), err)
	}
	if strings.HasPrefix(c.header.Get("Content-Type"), "text/event-stream") && r.Method != http.MethodHead && !c.over {
		sp.checkEventStream(tb, what, c.body.Bytes())
	}
}

// checkComponent checks an answer against the response component name of
// the document, for the answers to paths and methods that it does not list.
func (sp *spec) checkComponent(tb testing.TB, r *http.Request, name string, c *capture) {
	resp := sp.doc.Components.Responses[name]
	op := openapi3.NewOperation()
	op.Responses = openapi3.NewResponses(openapi3.WithStatus(c.status, resp))
	vr := r.Clone(context.WithoutCancel(r.Context()))
	vr.Method = http.MethodGet // a HEAD answer too: kin-openapi skips HEAD
	route := &routers.Route{Spec: sp.doc, Path: r.URL.Path, Method: vr.Method, Operation: op}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: r.Method == http.MethodHead, MultiError: true}
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vr, Route: route, Options: opts},
		Status:                 c.status, Header: c.header, Body: io.NopCloser(bytes.NewReader(c.body.Bytes())), Options: opts,
	}
	if err := openapi3filter.ValidateResponse(vr.Context(), rin); err != nil {
		tb.Errorf("openapi: %s %s: the answer %d %s does not match components/responses/%s: %v", r.Method, r.URL.RequestURI(), c.status, c.body.Bytes(), name, err)
	}
}

// checkEventStream checks a follow stream against the document's
// EventStream: a retry hint, comments, and events whose id is their seq and
// whose data is an Event. An event cut short at the end is not checked.
func (sp *spec) checkEventStream(tb testing.TB, what string, stream []byte) {
	schema := sp.doc.Components.Schemas["Event"].Value
	var id string
	var data []string
	sc := bufio.NewScanner(bytes.NewReader(stream))
	sc.Buffer(nil, maxCheckedBody)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data == nil {
				continue
			}
			var v any
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &v); err != nil {
				tb.Errorf("openapi: %s: stream event %s: data is not JSON: %v", what, id, err)
			} else if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()); err != nil {
				tb.Errorf("openapi: %s: stream event %s: data is not an Event: %v", what, id, err)
			} else if seq, _ := v.(map[string]any)["seq"].(float64); strconv.FormatFloat(seq, 'f', -1, 64) != id {
				tb.Errorf("openapi: %s: stream event id %q, but its seq is %v", what, id, seq)
			}
			id, data = "", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "retry: "):
			if n, err := strconv.Atoi(line[7:]); err != nil || n < 0 {
				tb.Errorf("openapi: %s: stream line %q: retry is not a delay in milliseconds", what, line)
			}
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		default:
			tb.Errorf("openapi: %s: stream line %q is none the document describes", what, line)
		}
	}
}

// otherMethods returns the status that the path item says the methods it
// does not list get (its x-other-methods), or 405, the default.
func otherMethods(item *openapi3.PathItem) int {
	if item != nil {
		if v, ok := item.Extensions["x-other-methods"].(float64); ok {
			return int(v)
		}
	}
	return http.StatusMethodNotAllowed
}

// allMethods are the methods TestOpenAPIListsEveryRoute tries on every path.
var allMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// methods returns the methods of a path item as the handler lists them in
// Allow: in the order of the document's operations, GET, HEAD, POST.
func methods(item *openapi3.PathItem) string {
	var ms []string
	for _, m := range allMethods {
		if item.GetOperation(m) != nil {
			ms = append(ms, m)
		}
	}
	return strings.Join(ms, ", ")
}

// TestOpenAPIDocumentIsValid validates openapi.json, examples included,
// as an OpenAPI 3.1 document.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, err := loadDoc()
	if err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi.json is OpenAPI %q, want 3.1.0", doc.OpenAPI)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || op.Summary == "" {
				t.Errorf("%s %s has no operationId or summary", method, path)
			}
		}
	}
	var raw any
	if err := json.Unmarshal(httpapi.OpenAPI(), &raw); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
}

// muxRoutes are the paths that handler.go registers with the mux itself
// rather than with h.route, with the methods they serve: "/", where the
// status page answers GET and HEAD for browsers (statusPage in status.go)
// and the rest is the 404 of unknown paths. A path registered so that is
// not here fails TestOpenAPIListsEveryRoute, which also tries every method
// on every path, so that their methods cannot drift either.
var muxRoutes = map[string]string{"/": "GET, HEAD"}

// handlerRoutes returns the routes that NewHandler registers in
// handler.go, read from its calls of h.route and, for the paths it gives
// the mux itself, muxRoutes: path -> "GET, HEAD".
func handlerRoutes(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "handler.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	routes := make(map[string]string)
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if ok && (sel.Sel.Name == "HandleFunc" || sel.Sel.Name == "Handle") && len(call.Args) > 0 {
			// A path given to the mux directly; route's own call passes
			// its parameter, not a literal.
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				path, _ := strconv.Unquote(lit.Value)
				ms, known := muxRoutes[path]
				if !known {
					t.Errorf("handler.go registers %s with the mux, not with h.route: describe it in openapi.json and add it to muxRoutes with its methods", path)
				}
				routes[path] = ms
			}
			return true
		}
		if !ok || sel.Sel.Name != "route" || len(call.Args) < 4 {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Fatalf("a route of handler.go has a path that is not a literal: %#v", call.Args[0])
		}
		path, _ := strconv.Unquote(lit.Value)
		var ms []string
		for _, a := range call.Args[3:] {
			m, ok := a.(*ast.SelectorExpr)
			if !ok || !strings.HasPrefix(m.Sel.Name, "Method") {
				t.Fatalf("route %s: a method that is not an http.MethodX constant: %#v", path, a)
			}
			ms = append(ms, strings.ToUpper(strings.TrimPrefix(m.Sel.Name, "Method")))
		}
		routes[path] = strings.Join(ms, ", ")
		return true
	})
	if len(routes) == 0 {
		t.Fatal("found no h.route calls in handler.go")
	}
	return routes
}

// TestOpenAPIListsEveryRoute checks that the document lists exactly the
// routes of handler.go, each with its methods, and that the handler serves
// each operation of the document and answers the other methods as the
// document says: 405 with the document's methods in Allow, or the 404 of
// x-other-methods. The requests accept HTML as a browser's do, so that /
// answers with the status page.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	sp := mustSpec(t)
	documented := make(map[string]string)
	for path, item := range sp.doc.Paths.Map() {
		documented[path] = methods(item)
	}
	if diff := cmp.Diff(handlerRoutes(t), documented); diff != "" {
		t.Errorf("the routes of handler.go and the paths of openapi.json differ (-handler.go +openapi.json):\n%s", diff)
	}
	s := newServer(t, nil, nil, nil)
	for _, path := range slices.Sorted(maps.Keys(documented)) {
		item := sp.doc.Paths.Find(path)
		for _, m := range allMethods {
			// Checked by doWith against the operation, or against the
			// answer the document gives to methods it does not list.
			resp := s.doWith(t, m, path, "", "Accept", browserAccept, "Content-Type", "application/json")
			switch {
			case item.GetOperation(m) != nil:
				if resp.status == http.StatusNotFound || resp.status == http.StatusMethodNotAllowed {
					t.Errorf("%s %s = %d %s, but the document lists it", m, path, resp.status, resp.body)
				}
			case resp.status != otherMethods(item):
				t.Errorf("%s %s = %d %s, want %d", m, path, resp.status, resp.body, otherMethods(item))
			}
		}
	}
}

// TestOpenAPIErrorCodes checks that the document's error codes are the
// Code constants of errors.go.
func TestOpenAPIErrorCodes(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(name.Name, "Code") {
					v, _ := strconv.Unquote(lit.Value)
					codes = append(codes, v)
				}
			}
		}
	}
	var documented []string
	for _, v := range mustSpec(t).doc.Components.Schemas["Error"].Value.Properties["code"].Value.Enum {
		documented = append(documented, v.(string))
	}
	slices.Sort(codes)
	slices.Sort(documented)
	if diff := cmp.Diff(codes, documented); diff != "" {
		t.Errorf("the Code constants and the codes of openapi.json differ (-errors.go +openapi.json):\n%s", diff)
	}
}

// TestOpenAPIEndpoint checks that GET /openapi.json serves the embedded
// document, the file of the repository, without the token even under
// TokenReads.
func TestOpenAPIEndpoint(t *testing.T) {
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(httpapi.OpenAPI(), file) {
		t.Fatal("httpapi.OpenAPI() is not openapi.json")
	}
	b := httpapi.OpenAPI()
	b[0] = 'x'
	if httpapi.OpenAPI()[0] == 'x' {
		t.Error("OpenAPI() returns the package's own bytes: a caller can change what the handler serves")
	}

	s := newServer(t, nil, nil, &httpapi.Options{Token: "secret", TokenReads: true})
	resp := s.do(t, http.MethodGet, "/openapi.json", "")
	if resp.status != 200 || !bytes.Equal(resp.body, file) {
		t.Errorf("GET /openapi.json = %d, %d bytes; want 200 and openapi.json's %d bytes", resp.status, len(resp.body), len(file))
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" || resp.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET /openapi.json headers %v; want JSON with nosniff", resp.header)
	}
	if resp := s.do(t, http.MethodGet, "/openapi.json?v=1", ""); resp.status != 400 {
		t.Errorf("GET /openapi.json?v=1 = %d %s, want 400", resp.status, resp.body)
	}
	if resp := s.do(t, http.MethodGet, "/stats", ""); resp.status != 401 {
		t.Errorf("GET /stats without the token = %d, want 401 (TokenReads)", resp.status)
	}

	srv := httptest.NewServer(checkedHandler(t, s.h))
	defer srv.Close()
	head, err := srv.Client().Head(srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, head.Body)
	head.Body.Close()
	if head.StatusCode != 200 || n != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(file)) {
		t.Errorf("HEAD /openapi.json = %d, %d bytes of body, Content-Length %q; want 200, none, %d",
			head.StatusCode, n, head.Header.Get("Content-Length"), len(file))
	}
}

// TestCheckedHandlerFindsDrift checks the checker: answers that the
// document does not describe fail it.
func TestCheckedHandlerFindsDrift(t *testing.T) {
	tests := []struct {
		name, method, target, body string
		want                       string // in the error
		h                          http.HandlerFunc
	}{
		{"UndocumentedStatus", "GET", "/stats", "", "status is not supported", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		}},
		{"UndocumentedField", "GET", "/health", "", "load", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Write([]byte(`{"status":"healthy","load":1}`))
		}},
		{"MissingRetryAfter", "POST", "/publish", `{"topic":"a","event_id":"1"}`, "Retry-After", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(503)
			w.Write([]byte(`{"error":"busy","code":"queue_full"}`))
		}},
		{"CodeOfAnotherStatus", "GET", "/events", "", "queue_full", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"x","code":"queue_full"}`))
		}},
		{"AcceptsAnInvalidRequest", "POST", "/publish", `{"topic":"a"}`, "request the document rejects", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Write([]byte(`{"processed_count":1,"duplicate_dropped":0,"conflicts":0}`))
		}},
		{"EventWithoutSeq", "GET", "/events?follow=true", "", "seq", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Write([]byte("retry: 1000\n\nid: 1\ndata: {\"topic\":\"a\",\"event_id\":\"1\",\"timestamp\":\"2026-11-25T10:00:00Z\"}\n\n"))
		}},
		{"UnlistedPathAnswered", "GET", "/status.json", "", "no such path", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{}`))
		}},
		{"StatusPageWithoutCSP", "GET", "/", "", "Content-Security-Policy", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Referrer-Policy", "no-referrer")
			w.Header().Set("Content-Length", "16")
			w.Write([]byte("<!DOCTYPE html>\n"))
		}},
		{"StatusPageAnswers405", "POST", "/", "", "other methods with 404", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(405)
			w.Write([]byte(`{"error":"no","code":"method_not_allowed"}`))
		}},
		{"WrongAllow", "DELETE", "/stats", "", "Allow", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(405)
			w.Write([]byte(`{"error":"no","code":"method_not_allowed"}`))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			req := httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader(tt.body))
			checkedHandler(rec, tt.h).ServeHTTP(httptest.NewRecorder(), req)
			if !slices.ContainsFunc(rec.errors, func(e string) bool { return strings.Contains(e, tt.want) }) {
				t.Errorf("checker errors %q; want one about %q", rec.errors, tt.want)
			}
		})
	}
}

// recordingTB records the errors reported to it instead of failing.
type recordingTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
