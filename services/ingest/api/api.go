// Package api is the ingest service's HTTP API: where messages enter byok over HTTP, for
// messenger services that would rather not speak Kafka. Each request is validated, turned into
// MessageEvents and published to the plaintext topic; the response is sent only after Kafka has
// acknowledged, so a 202 means byok has the message.
//
// It holds the handler, its JSON wire types (so clients such as services/loadgen use the same
// shapes) and Serve, which runs an http.Server until its context ends. It does not hold
// configuration or Kafka setup: services/ingest's main builds those.
//
// Bodies are plaintext: they are never logged and never quoted in an error response.
package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/producer"
)

// Limits and defaults of the API.
const (
	// MaxRequestBytes caps a POST /v1/messages request: room for a 1 MiB body in base64
	// (4/3 of it) plus metadata.
	MaxRequestBytes = 3 << 19 // 1.5 MiB
	// MaxBatchRequestBytes caps a POST /v1/messages:batch request.
	MaxBatchRequestBytes = 16 << 20
	// MaxBatchMessages caps the number of messages in one batch request.
	MaxBatchMessages = 1000
	// DefaultContentType is the content_type of a message that does not give one.
	DefaultContentType = "text/plain"
	// PublishTimeout bounds how long a request waits for Kafka before it answers 503.
	PublishTimeout = 30 * time.Second
)

// Publisher publishes events and returns once they are durably stored (for Kafka: acknowledged by
// all in-sync replicas), or with an error, in which case some may have been stored. It must be
// safe for concurrent use. *producer.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, events ...*byokv1.MessageEvent) error
}

var _ Publisher = (*producer.Publisher)(nil)

// Message is one message as clients post it. Exactly one of Body and BodyBase64 must be set.
type Message struct {
	TenantID string `json:"tenant_id"`
	ChatID   string `json:"chat_id"`
	// MessageID is optional: the service generates one when it is empty. Clients that retry
	// should set it, so that a retried message is deduplicated downstream instead of stored twice.
	MessageID string `json:"message_id,omitempty"`
	SenderID  string `json:"sender_id"`
	// CreatedAt is RFC 3339; the time of the request when empty.
	CreatedAt string `json:"created_at,omitempty"`
	// ContentType is the body's media type; DefaultContentType when empty.
	ContentType string `json:"content_type,omitempty"`
	// Body is the body as UTF-8 text.
	Body *string `json:"body,omitempty"`
	// BodyBase64 is the body in standard base64, for bodies that are not UTF-8 text.
	BodyBase64 *string `json:"body_base64,omitempty"`
}

// BatchRequest is the body of POST /v1/messages:batch.
type BatchRequest struct {
	Messages []json.RawMessage `json:"messages"`
}

// MessageResponse is the 202 answer to POST /v1/messages.
type MessageResponse struct {
	MessageID string `json:"message_id"`
}

// BatchResponse is the 202 answer to POST /v1/messages:batch: ids in request order.
type BatchResponse struct {
	MessageIDs []string `json:"message_ids"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// MessageFromEvent returns the wire form of e, with the body as text when it is valid UTF-8.
func MessageFromEvent(e *byokv1.MessageEvent) Message {
	m := Message{
		TenantID: e.TenantId, ChatID: e.ChatId, MessageID: e.MessageId, SenderID: e.SenderId,
		ContentType: e.ContentType,
	}
	if e.CreatedAt != nil {
		m.CreatedAt = e.CreatedAt.AsTime().Format(time.RFC3339Nano)
	}
	if utf8.Valid(e.Body) {
		s := string(e.Body)
		m.Body = &s
	} else {
		s := base64.StdEncoding.EncodeToString(e.Body)
		m.BodyBase64 = &s
	}
	return m
}

// Event turns m into a MessageEvent, filling defaults, and validates it. Errors name the field
// and never quote the body.
func (m *Message) Event(now time.Time) (*byokv1.MessageEvent, error) {
	e := &byokv1.MessageEvent{
		SchemaVersion: message.SchemaVersion,
		TenantId:      m.TenantID,
		ChatId:        m.ChatID,
		MessageId:     m.MessageID,
		SenderId:      m.SenderID,
		ContentType:   m.ContentType,
	}
	if e.MessageId == "" {
		e.MessageId = producer.NewMessageID()
	}
	if e.ContentType == "" {
		e.ContentType = DefaultContentType
	}
	created := now
	if m.CreatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, m.CreatedAt)
		if err != nil {
			return nil, errors.New("created_at is not an RFC 3339 timestamp")
		}
		created = t
	}
	e.CreatedAt = timestamppb.New(created)
	switch {
	case m.Body != nil && m.BodyBase64 != nil:
		return nil, errors.New("body and body_base64 are both set, want one")
	case m.Body != nil:
		e.Body = []byte(*m.Body)
	case m.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*m.BodyBase64)
		if err != nil {
			return nil, errors.New("body_base64 is not valid standard base64")
		}
		e.Body = b
	default:
		return nil, errors.New("body or body_base64 is required")
	}
	if err := message.Validate(e); err != nil {
		return nil, err
	}
	return e, nil
}

type handler struct {
	pub Publisher
	log zerolog.Logger
	now func() time.Time
}

// NewHandler returns the API's handler:
//
//	POST /v1/messages        one Message            → 202 MessageResponse
//	POST /v1/messages:batch  BatchRequest            → 202 BatchResponse (all or nothing)
//	GET  /healthz                                    → 200 "ok"
//
// Errors are ErrorResponse: 400 for a request that can never succeed (the reason names the
// field, and for a batch the index), 405, 413 over the size limits, 415 when the request is not
// application/json, 503 when publishing failed (retry).
func NewHandler(pub Publisher, log zerolog.Logger) http.Handler {
	h := &handler{pub: pub, log: log, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/messages", h.postMessage)
	mux.HandleFunc("/v1/messages:batch", h.postBatch)
	mux.HandleFunc("/healthz", h.healthz)
	return mux
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed, want GET")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

// requestError is an answer to a request that cannot succeed as sent.
type requestError struct {
	status int
	reason string
}

func (e *requestError) Error() string { return e.reason }

func badRequest(format string, a ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, reason: fmt.Sprintf(format, a...)}
}

// readJSON checks method and media type, then decodes r's body into v, rejecting unknown fields
// and trailing data.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) *requestError {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &requestError{http.StatusMethodNotAllowed, "method " + r.Method + " is not allowed, want POST"}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &requestError{http.StatusUnsupportedMediaType, "Content-Type must be application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request is larger than %d bytes", limit)}
		}
		return badRequest("could not read the request")
	}
	if err := decodeStrict(body, v); err != nil {
		return badRequest("%s", err)
	}
	return nil
}

// decodeStrict decodes one JSON value from b into v. Its errors name a field or a byte offset,
// never a piece of the input: the input holds message bodies.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("request has data after the JSON value")
	}
	return nil
}

func describeJSONError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("request is not valid JSON (at byte %d)", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return fmt.Errorf("request must be a JSON object")
		}
		return fmt.Errorf("%s must be a JSON %s", te.Field, jsonKind(te.Type.Kind().String()))
	}
	if errors.Is(err, io.EOF) {
		return errors.New("request is empty")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("request is not valid JSON (truncated)")
	}
	// encoding/json reports unknown fields only as text: `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if len(name) > 66 {
			name = name[:64] + `…"`
		}
		return fmt.Errorf("unknown field %s", name)
	}
	return errors.New("request is not valid JSON")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	case "ptr":
		return "string"
	}
	return goKind
}

func (h *handler) postMessage(w http.ResponseWriter, r *http.Request) {
	var m Message
	if rerr := readJSON(w, r, MaxRequestBytes, &m); rerr != nil {
		h.reject(w, r, rerr)
		return
	}
	e, err := m.Event(h.now())
	if err != nil {
		h.reject(w, r, badRequest("%s", err))
		return
	}
	if !h.publish(w, r, e) {
		return
	}
	writeJSON(w, http.StatusAccepted, MessageResponse{MessageID: e.MessageId})
}

func (h *handler) postBatch(w http.ResponseWriter, r *http.Request) {
	var req BatchRequest
	if rerr := readJSON(w, r, MaxBatchRequestBytes, &req); rerr != nil {
		h.reject(w, r, rerr)
		return
	}
	switch n := len(req.Messages); {
	case n == 0:
		h.reject(w, r, badRequest("messages is required and must not be empty"))
		return
	case n > MaxBatchMessages:
		h.reject(w, r, badRequest("messages has %d items, at most %d are allowed", n, MaxBatchMessages))
		return
	}
	now := h.now()
	events := make([]*byokv1.MessageEvent, len(req.Messages))
	for i, raw := range req.Messages {
		var m Message
		if err := decodeStrict(raw, &m); err != nil {
			h.reject(w, r, badRequest("messages[%d]: %s", i, err))
			return
		}
		e, err := m.Event(now)
		if err != nil {
			h.reject(w, r, badRequest("messages[%d]: %s", i, err))
			return
		}
		events[i] = e
	}
	if !h.publish(w, r, events...) {
		return
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.MessageId
	}
	writeJSON(w, http.StatusAccepted, BatchResponse{MessageIDs: ids})
}

// publish publishes events and, if that fails, answers 503. It reports whether it succeeded.
func (h *handler) publish(w http.ResponseWriter, r *http.Request, events ...*byokv1.MessageEvent) bool {
	ctx, cancel := context.WithTimeout(r.Context(), PublishTimeout)
	defer cancel()
	start := time.Now()
	if err := h.pub.Publish(ctx, events...); err != nil {
		// err comes from the publisher (Kafka errors, ids, counts): never a body. It stays in the
		// log; the client gets no internals.
		h.log.Error().Err(err).Str("path", r.URL.Path).Int("messages", len(events)).
			Dur("took", time.Since(start)).Msg("publish failed")
		writeError(w, http.StatusServiceUnavailable, "could not publish, retry")
		return false
	}
	h.log.Debug().Str("path", r.URL.Path).Int("messages", len(events)).Str("tenant_id", events[0].TenantId).
		Dur("took", time.Since(start)).Msg("published")
	return true
}

func (h *handler) reject(w http.ResponseWriter, r *http.Request, e *requestError) {
	h.log.Info().Str("method", r.Method).Str("path", r.URL.Path).Int("status", e.status).
		Str("reason", e.reason).Msg("request rejected")
	writeError(w, e.status, e.reason)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, ErrorResponse{Error: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
