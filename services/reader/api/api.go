// Package api is the reader service's HTTP API, the read path: messenger services post stored
// envelopes and get message bodies back, opened with DEKs unwrapped through each tenant's KMS.
//
//	POST /v1/decrypt  DecryptRequest → 200 DecryptResponse (a body or an error per item)
//	GET  /healthz                    → 200 "ok"
//
// Callers authenticate with a bearer token (Callers: only token hashes are stored, compared in
// constant time) and may read only the tenants the callers file lists for them. Every request
// names an actor and a purpose; the audited actor is the authenticated caller (service) and
// on_behalf_of (user). Reader holds the logic: authorization, the short-lived DEK cache
// (pkg/deccache), audited batch unwraps, audit of refused and cached reads.
//
// Bodies are plaintext and tokens are secrets: neither is ever logged or quoted in a response.
// Configuration and Kafka setup live in services/reader's main.
package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/callers"
)

// Limits of the API.
const (
	// MaxItems caps the items of one request.
	MaxItems = 1000
	// MaxRequestBytes caps a request: 1,000 envelopes of up to ~24 KiB each in base64.
	MaxRequestBytes = 32 << 20
	// RequestTimeout bounds one request's KMS and audit work.
	RequestTimeout = 30 * time.Second
)

// DecryptRequest is the body of POST /v1/decrypt.
type DecryptRequest struct {
	Actor      string        `json:"actor"`
	OnBehalfOf string        `json:"on_behalf_of,omitempty"`
	Purpose    string        `json:"purpose"`
	Items      []DecryptItem `json:"items"`
}

// DecryptItem is one stored envelope and the message id it is stored under.
type DecryptItem struct {
	MessageID      string `json:"message_id"`
	EnvelopeBase64 string `json:"envelope_base64"`
}

// DecryptResult is one item's outcome: BodyBase64 or Error.
type DecryptResult struct {
	MessageID  string `json:"message_id"`
	BodyBase64 string `json:"body_base64,omitempty"`
	Error      string `json:"error,omitempty"`
}

// DecryptResponse is the 200 answer, results in request order.
type DecryptResponse struct {
	Results []DecryptResult `json:"results"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

type handler struct {
	reader  *Reader
	callers *callers.Set
	log     zerolog.Logger
}

// NewHandler returns the API's handler.
//
// Errors are ErrorResponse: 400 for a request that can never succeed (the reason names the
// field, and for an item its index), 401 without a valid bearer token, 403 when actor is not the
// authenticated caller, 405, 413 over the size limits, 415 when the request is not JSON.
func NewHandler(r *Reader, set *callers.Set, log zerolog.Logger) http.Handler {
	h := &handler{reader: r, callers: set, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/decrypt", h.decrypt)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store") // bodies must not linger in proxies
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, ErrorResponse{Error: reason})
}

func bearer(r *http.Request) string {
	v := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(v[len(prefix):])
}

func (h *handler) decrypt(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed, want POST")
		return
	}
	caller, ok := h.callers.Authenticate(bearer(r))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="byok-reader"`)
		writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
		h.log.Warn().Str("remote", r.RemoteAddr).Msg("request without a valid bearer token")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
	}
	var req DecryptRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request is larger than %d bytes", MaxRequestBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "request is not valid JSON of the form {\"actor\", \"on_behalf_of\", \"purpose\", \"items\": [{\"message_id\", \"envelope_base64\"}]}")
		return
	}
	items, reason := req.validate()
	if reason != "" {
		writeError(w, http.StatusBadRequest, reason)
		return
	}
	if req.Actor != caller.Name {
		writeError(w, http.StatusForbidden, "actor does not match the caller the bearer token belongs to")
		return
	}
	ctx, cancel := contextWithTimeout(r, RequestTimeout)
	defer cancel()
	start := time.Now()
	bodies, errs := h.reader.Open(ctx, ReadRequest{Caller: caller, OnBehalfOf: req.OnBehalfOf, Purpose: req.Purpose,
		RequestID: r.Header.Get("X-Request-Id")}, items)
	resp := DecryptResponse{Results: make([]DecryptResult, len(items))}
	failed := 0
	for i := range items {
		resp.Results[i].MessageID = items[i].MessageID
		if errs[i] != nil {
			failed++
			resp.Results[i].Error = Reason(errs[i])
			continue
		}
		resp.Results[i].BodyBase64 = base64.StdEncoding.EncodeToString(bodies[i])
		clear(bodies[i])
	}
	h.log.Debug().Str("caller", caller.Name).Str("purpose", req.Purpose).Int("items", len(items)).Int("failed", failed).
		Dur("took", time.Since(start)).Msg("decrypt")
	writeJSON(w, http.StatusOK, resp)
}

// validate checks the request and decodes its envelopes; the reason names the field.
func (req *DecryptRequest) validate() ([]ReadItem, string) {
	switch {
	case strings.TrimSpace(req.Actor) == "":
		return nil, "actor is required"
	case strings.TrimSpace(req.Purpose) == "":
		return nil, "purpose is required"
	case len(req.Items) == 0:
		return nil, "items is empty"
	case len(req.Items) > MaxItems:
		return nil, fmt.Sprintf("items has %d entries, at most %d allowed", len(req.Items), MaxItems)
	}
	items := make([]ReadItem, len(req.Items))
	for i, it := range req.Items {
		if it.MessageID == "" {
			return nil, fmt.Sprintf("items[%d].message_id is required", i)
		}
		b, err := base64.StdEncoding.DecodeString(it.EnvelopeBase64)
		if err != nil || len(b) == 0 {
			return nil, fmt.Sprintf("items[%d].envelope_base64 is not valid standard base64", i)
		}
		items[i] = ReadItem{MessageID: it.MessageID, Envelope: b}
	}
	return items, ""
}
