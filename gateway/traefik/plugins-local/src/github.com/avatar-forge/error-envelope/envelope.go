// Package envelope answers the gateway's own errors in the API's JSON error envelope
// (shared/spec/API.md): {"success": false, "error": {"code": "...", "message": "..."}}.
//
// Traefik's errors middleware cannot do it: it replaces every response with a given status,
// the services' own enveloped 502, 504, 429 and 413 (with their codes, messages and
// Retry-After) as well as Traefik's. This one tells them apart by their body's type: an error
// status whose Content-Type is not JSON is Traefik's own (its proxy's 502 and 504, the
// in-flight limit's 429, the body limit's 413, the read timeout's 499) and is replaced; a JSON
// one is a service's and passes unchanged. A request whose body could not be read whole (cut
// off by the read timeout) is answered 408 request_timeout, whichever status Traefik chose.
//
// Every request gets an X-Request-ID, and every response says it: the client's own when it
// sent a harmless one, else a new one (as the services do, avatar_shared.logs), set on the
// request so the service and the access log use it too. So the gateway's own errors carry
// one a client can quote, as the services' answers do.
//
// Run by Traefik's Go interpreter (a local plugin, traefik.yml's experimental.localPlugins):
// the response writer it wraps is not seen by Traefik as a Flusher, so it flushes each write
// itself, or streamed replies (SSE, audio) would be held back.
package envelope

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Config is the middleware's options (rules.yml).
type Config struct {
	// BodyLimitBytes is the gateway's body limit, named in its 413's message.
	BodyLimitBytes int64 `json:"bodyLimitBytes,omitempty"`
}

// CreateConfig makes the default options.
func CreateConfig() *Config {
	return &Config{}
}

// Envelope is the middleware.
type Envelope struct {
	next   http.Handler
	config *Config
}

// New makes the middleware.
func New(_ context.Context, next http.Handler, config *Config, _ string) (http.Handler, error) {
	return &Envelope{next: next, config: config}, nil
}

// RequestIDHeader is the header the services read and echo their request id in.
const RequestIDHeader = "X-Request-ID"

func (e *Envelope) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	id := req.Header.Get(RequestIDHeader)
	if !safeRequestID(id) {
		id = newRequestID()
		req.Header.Set(RequestIDHeader, id)
	}
	w := &writer{ResponseWriter: rw, config: e.config, requestID: id}
	if req.Body != nil && req.Body != http.NoBody {
		w.body = &body{ReadCloser: req.Body}
		req.Body = w.body
	}
	e.next.ServeHTTP(w, req)
}

// safeRequestID is avatar_shared.logs' rule: 1 to 128 of A-Z a-z 0-9 . _ : -, else the
// services would replace it with their own, and the client could not quote it.
func safeRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune("._:-", c)
		if !ok {
			return false
		}
	}
	return true
}

// newRequestID is 32 hex digits, as the services make theirs.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// body notes whether reading the request's body failed: the client stopped sending it, or the
// read timeout (GATEWAY_READ_TIMEOUT) cut it off. Traefik then answers 499, or 502 or 504 as
// if the service had failed, depending on which error it sees first.
type body struct {
	io.ReadCloser
	failed bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.failed = true
	}
	return n, err
}

type answer struct {
	status     int
	code       string
	message    string
	retryAfter string
}

// RetryAfterInFlight is when an address refused for its requests under way may try again:
// the limit counts requests, and one of them is likely done by then.
const RetryAfterInFlight = "1"

func (e *writer) answerFor(status int) answer {
	switch status {
	case http.StatusBadRequest:
		return answer{status, "bad_request", "The request is malformed.", ""}
	case http.StatusRequestTimeout, 499:
		// 499: the request was cut off by the read timeout (GATEWAY_READ_TIMEOUT) before it
		// was all received. The client may be gone; if not, it learns why.
		return answer{http.StatusRequestTimeout, "request_timeout",
			"The request was not received in full in time; send it again (a large upload " +
				"needs a faster connection or a smaller file).", ""}
	case http.StatusRequestEntityTooLarge:
		message := "The request body is too large."
		if e.config.BodyLimitBytes > 0 {
			message = "The request body is larger than " +
				strconv.FormatInt(e.config.BodyLimitBytes, 10) + " bytes."
		}
		return answer{status, "payload_too_large", message, ""}
	case http.StatusTooManyRequests:
		return answer{status, "too_many_requests_in_flight",
			"Too many requests from your address are under way at once; try again when " +
				"one has finished.", RetryAfterInFlight}
	case http.StatusBadGateway:
		return answer{status, "service_unreachable",
			"The service could not be reached, or broke off its answer; try again.", ""}
	case http.StatusServiceUnavailable:
		return answer{status, "service_unavailable",
			"The service is unavailable right now; try again shortly.", "5"}
	case http.StatusGatewayTimeout:
		return answer{status, "service_timeout",
			"The service took too long to answer; try again.", ""}
	}
	text := http.StatusText(status)
	if text == "" {
		text = "HTTP error " + strconv.Itoa(status)
	}
	code := strings.ToLower(strings.NewReplacer(" ", "_", "-", "_", "'", "").Replace(text))
	return answer{status, code, text + ".", ""}
}

type writer struct {
	http.ResponseWriter
	config    *Config
	body      *body
	requestID string
	wrote     bool
	replaced  bool
}

func (e *writer) WriteHeader(status int) {
	if e.wrote {
		return
	}
	if status < 200 {
		e.ResponseWriter.WriteHeader(status) // informational: the real status follows
		return
	}
	e.wrote = true
	header := e.Header()
	if header.Get(RequestIDHeader) == "" { // the service's echo, else ours
		header.Set(RequestIDHeader, e.requestID)
	}
	if status < 400 || strings.Contains(header.Get("Content-Type"), "json") {
		e.ResponseWriter.WriteHeader(status)
		return
	}
	if status == 499 && (e.body == nil || !e.body.failed) {
		// The client went away before its answer: nobody reads one, and the access log and
		// the metrics keep saying so (a 408 would read as a slow upload).
		e.ResponseWriter.WriteHeader(status)
		return
	}
	e.replaced = true
	if e.body != nil && e.body.failed {
		status = http.StatusRequestTimeout // the request never arrived whole: not the service's fault
	}
	found := e.answerFor(status)
	body, _ := json.Marshal(map[string]any{
		"success": false,
		"error":   map[string]string{"code": found.code, "message": found.message},
	})
	header.Del("Content-Length")
	header.Del("Content-Encoding")
	header.Set("Content-Type", "application/json")
	header.Set("Content-Length", strconv.Itoa(len(body)))
	if found.retryAfter != "" && header.Get("Retry-After") == "" {
		header.Set("Retry-After", found.retryAfter)
	}
	e.ResponseWriter.WriteHeader(found.status)
	_, _ = e.ResponseWriter.Write(body)
}

func (e *writer) Write(data []byte) (int, error) {
	if !e.wrote {
		e.WriteHeader(http.StatusOK)
	}
	if e.replaced {
		return len(data), nil // Traefik's plain text: the envelope was written instead
	}
	n, err := e.ResponseWriter.Write(data)
	e.Flush()
	return n, err
}

func (e *writer) Flush() {
	if e.replaced {
		return
	}
	if flusher, ok := e.ResponseWriter.(http.Flusher); ok {
		flusher.Flush()
	}
}
