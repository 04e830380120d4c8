package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authError is a request that lacks the bearer token its endpoint needs.
type authError struct {
	presented bool // a token was sent, but not the right one
}

func (e *authError) Error() string {
	if e.presented {
		return "the bearer token is not valid"
	}
	return "this endpoint needs a bearer token: send Authorization: Bearer <token>"
}

// authorize returns nil if r may use the endpoint called name, or an
// *authError. POST /publish needs the token when one is configured; the
// reads need it too with TokenReads; /health and /openapi.json never do
// (the description of the API holds no data).
//
// The tokens are compared as SHA-256 digests with [subtle.ConstantTimeCompare],
// so the time taken tells nothing about the configured token, not even its
// length.
func (h *Handler) authorize(r *http.Request, endpoint string) error {
	if h.opts.Token == "" || endpoint == "health" || endpoint == "openapi" || (endpoint != "publish" && !h.opts.TokenReads) {
		return nil
	}
	header := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return &authError{presented: header != ""}
	}
	sum := sha256.Sum256([]byte(strings.TrimLeft(token, " ")))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) != 1 {
		return &authError{presented: true}
	}
	return nil
}
