package httpapi

import (
	_ "embed"
	"net/http"
	"strconv"
)

//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI 3.1 description of the API that a [Handler]
// serves, as JSON: every endpoint with its parameters, bodies, statuses,
// headers and error codes. A Handler serves the same bytes at
// GET /openapi.json. The tests of this package check every request and
// answer of the Handler they make against it, so it does not drift from
// the code.
//
// The slice is the caller's own copy.
func OpenAPI() []byte {
	return append([]byte(nil), openapiJSON...)
}

// serveOpenAPI answers GET /openapi.json with the embedded description. It
// needs no token, even with [Options].TokenReads: it describes the API, not
// the data.
func (h *Handler) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	setJSONHeaders(w)
	w.Header().Set("Content-Length", strconv.Itoa(len(openapiJSON)))
	w.WriteHeader(http.StatusOK)
	w.Write(openapiJSON)
}
