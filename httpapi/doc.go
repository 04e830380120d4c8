// Package httpapi serves an [eventagg.Aggregator] over HTTP and provides a
// Go client for it.
//
// [NewHandler] returns an [http.Handler] to mount in any mux; it serves a
// [Backend], the methods of the Aggregator that it uses:
//
//	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", httpapi.NewHandler(agg, nil)))
//
// # Endpoints
//
//   - POST /publish: the body is one event object, a JSON array of events, or
//     {"events":[...]}. 200 answers
//     {"processed_count":N,"duplicate_dropped":M,"conflicts":C}: C counts the
//     dropped events whose payload differed from the stored copy's (see
//     [eventagg.Conflict]), a part of M. With ?duplicates=true it adds
//     "duplicate_indexes", the positions of every dropped event, conflicts
//     included, and "conflict_indexes", those of the conflicts: both always
//     there, possibly empty. 400 for malformed JSON or an invalid event, with
//     {"error":...,"code":...,"index":i,"field":...} naming the first bad
//     event; 409 when the Aggregator rejects conflicts
//     ([eventagg.Options].RejectConflicts) and the batch holds one, with
//     {"error":...,"code":"conflict","index":i,"field":"payload"}; 413 for a
//     body over [Options].MaxBodyBytes or more than
//     [Options].MaxEventsPerRequest events; 503 with Retry-After when the
//     queue is full, the server is shutting down or the store fails (full,
//     damaged, locked). Nothing of a rejected request is stored or counted.
//     Unknown fields in an event are ignored.
//   - GET /events?topic=&after=&limit=: a JSON array of stored events in
//     acceptance order, each with its "seq". Without limit the whole listing
//     is streamed in bounded memory. With limit (1 to [Options].MaxPage), a
//     page of at most limit events, which also ends after the event that
//     brings its payloads to [eventagg.PageBytes]; when more events follow,
//     a Link: <?after=...&limit=...>; rel="next" header, a reference
//     relative to the request's URL, so that it works under any mount
//     prefix. At most [Options].MaxListings listings are served at once
//     (503 with Retry-After above), and a listing whose client reads
//     nothing for [Options].WriteTimeout is cut.
//   - GET /events?follow=true&topic=&after=&limit=: the same events, then
//     each new one once durable, as a text/event-stream of server-sent
//     events ("id: <seq>", "data: <the event's JSON>"; a payload's line
//     breaks split its data over lines), after a "retry:" hint, with a
//     comment every [Options].Heartbeat on an idle stream. The
//     Last-Event-ID header takes the place of after; with limit the stream
//     ends after that many events. At most [Options].MaxFollowers at once
//     (503 too_many_followers above); 501 if the [Backend] is not a
//     [Tailer]. Streams end at [Handler.CloseFollows] or when the backend
//     shuts down.
//   - GET /stats?topics_after=&topics_limit=: {"received","unique_processed",
//     "duplicate_dropped","conflicts","stored","expired","topic_count",
//     "topics":{...},"started_at","uptime_seconds"} and, when the store holds
//     claims, "claims":{"active","expired"}; each topic with the same six counters:
//     the totals over every topic, the number of topics, and a page of
//     topics in byte order of their names: [DefaultStatsTopics] of them, or
//     topics_limit (1 to [Options].MaxPage), after the name topics_after.
//     When more topics follow, a Link header points to the next page. The
//     answer's size is bounded however many topics exist.
//   - GET /health: 200 {"status":"healthy"} after a store ping; 503
//     {"status":"unhealthy","error":...,"code":...} when the store fails, is
//     damaged (see [eventagg.ErrDamaged]) or the server is shutting down.
//   - GET /metrics: Prometheus text format: event counters from the store
//     (eventagg_events_received_total, _unique_total, _duplicate_total,
//     _conflict_total; left out when the store cannot be read), claims,
//     rejected publish requests, requests by handler (publish, events,
//     stats, health, metrics, openapi, status for the status page, other)
//     and code, a publish latency histogram, the queue depth, follow
//     streams, the number of topics, the uptime, and the store's own
//     metrics ([eventagg.MetricsReporter]: for SQLite, the size of the
//     write-ahead log, checkpoints, failures, damage). [Handler.Metrics]
//     returns the same as Go values; package promcollector serves them
//     from a Prometheus registry.
//   - GET /openapi.json: the OpenAPI 3.1 description of all of the above,
//     as [OpenAPI] returns it: every parameter, body, status, header and
//     error code. The package's tests check every exchange of their
//     handler against it, so it follows the code.
//   - GET / from a browser (an Accept header that asks for text/html at
//     least as much as for JSON): an HTML status page, rendered on the
//     server: the counters of GET /stats, the 20 largest topics (of the first
//     [DefaultStatsTopics] by name), the ingest rate of the last 15 minutes
//     (once the page has been asked for, the Handler samples the received
//     counter after requests, at most every 10 s), the queue depth and the
//     store's health; its inline script
//     adds a live tail of GET /events?follow=true. Other requests for / get
//     the 404 of unknown paths.
//
// Query strings are read strictly: one that does not parse (a bad %XX
// escape, a ';'), a parameter an endpoint does not take, or one given twice
// gets 400, rather than being read as no filter. Unknown paths get 404 and
// wrong methods 405 with an Allow header (on /, every request but a
// browser's GET or HEAD gets the 404); their messages name the path as the
// client sent it, mount prefix included.
//
// # Errors
//
// Every error body is an [ErrorResponse]: JSON with an "error" message for
// people and a "code" for programs ([CodeInvalidEvent], [CodeConflict],
// [CodeQueueFull], ...: one per cause, each with its status). A failing
// store is the same 503 on every endpoint, publish or read, with code
// store_unavailable, store_full or store_damaged. Internal errors are logged
// and shown only as "internal error".
//
// # Publish bodies
//
// The body must be valid UTF-8 JSON (400 otherwise, where encoding/json
// would silently replace bad bytes and lone surrogate escapes with U+FFFD).
// A field given twice in an event object is refused (400), since which value
// counts would be a guess; field names match case-insensitively, as with
// encoding/json. Payloads must be I-JSON: see [eventagg.Event]. A timestamp
// that is null or absent is stamped with the receive time; one that is
// given is kept, or refused when out of range (0001-01-01T00:00:00Z
// included, which a Go program would otherwise read as absent). A body
// {"events":...} must hold an array there, not null, and no event fields
// beside it (what to publish would be a guess). The
// Content-Type may be absent, application/json or an application/*+json
// type in UTF-8 (415 otherwise). The body may be gzipped
// (Content-Encoding: gzip); [Options].MaxBodyBytes then bounds the
// decompressed size too, so a gzip bomb gets 413. Other content codings get
// 415 with Accept-Encoding: gzip. A body that does not arrive before the
// server's read timeout gets 408.
//
// # Access control
//
// With [Options].Token set, POST /publish requires "Authorization: Bearer
// <token>", and with [Options].TokenReads so do GET /events, /stats,
// /metrics and the status page; GET /health and GET /openapi.json never
// do. A request without the right token gets 401 with WWW-Authenticate:
// Bearer realm="eventagg". [ClientOptions].Token sends it.
//
// # Client
//
// [Client] publishes with retries: network errors, 429 and 5xx answers are
// retried with exponential backoff and jitter, honouring Retry-After. Resending
// is safe because the server deduplicates by (topic, event_id).
//
// A *Client is an [eventagg.Publisher], as an [*eventagg.Aggregator] is:
// [Client.Publish] returns the same [eventagg.Result], with an outcome per
// event (their Seq is 0: the server does not send it), and errors that match
// the library's ([APIError.Unwrap]): errors.Is(err, eventagg.ErrQueueFull),
// errors.As(err, &validationErr) with the index and field, and so on. Code
// written against a Publisher runs in process or against a server alike.
//
// [Client.Follow] follows the server's events as [eventagg.Aggregator.Follow]
// does in process: it reconnects with backoff and resumes by Last-Event-ID,
// so the consumer sees each event once across restarts of the server.
package httpapi
