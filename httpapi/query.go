package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// params parses the query of r strictly: a query that does not parse (a bad
// percent escape, a semicolon), a parameter not in allowed, or one given
// twice is a 400 naming it, where url.Values would drop or pick silently.
// It returns each parameter's value.
func params(r *http.Request, allowed ...string) (map[string]string, error) {
	if r.URL.RawQuery == "" {
		return nil, nil
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest(-1, "", "malformed query string (%v): use & between parameters and %%XX escapes", queryError(err))
	}
	out := make(map[string]string, len(v))
	for name, values := range v {
		switch {
		case !slices.Contains(allowed, name):
			if len(allowed) == 0 {
				return nil, badRequest(-1, name, "%s takes no query parameters, not %q", r.URL.Path, name)
			}
			return nil, badRequest(-1, name, "unknown query parameter %q: %s takes %s", name, r.URL.Path, strings.Join(allowed, ", "))
		case len(values) > 1:
			return nil, badRequest(-1, name, "query parameter %q is given %d times, so its value is ambiguous", name, len(values))
		}
		out[name] = values[0]
	}
	return out, nil
}

// queryError returns the message of a url.ParseQuery error without the
// package's prefix.
func queryError(err error) string {
	if e, ok := err.(url.EscapeError); ok {
		return "invalid escape " + strcut(string(e))
	}
	return err.Error()
}

// strcut shortens s for an error message.
func strcut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// mountPrefix returns the part of the path the client asked for that a mux
// stripped before the Handler saw the request (http.StripPrefix), such as
// "/eventagg"; "" when the Handler is not mounted under a prefix.
func mountPrefix(r *http.Request) string {
	if r.RequestURI == "" || r.RequestURI == "*" {
		return ""
	}
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return ""
	}
	if p, ok := strings.CutSuffix(u.Path, r.URL.Path); ok {
		return p
	}
	return ""
}
