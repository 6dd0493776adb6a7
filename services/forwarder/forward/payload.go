package forward

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// Header names of a webhook delivery.
const (
	// HeaderSignature is "sha256=" + hex(HMAC-SHA256(secret, body)).
	HeaderSignature = "X-Byok-Signature"
	// HeaderIdempotencyKey is hex(SHA-256(event ids of the batch, each followed by "\n")): a
	// retry of a batch carries the same key. After a restart, batches may be cut differently, so
	// receivers that must not double-count deduplicate by event_id (every event has one).
	HeaderIdempotencyKey = "X-Byok-Idempotency-Key"
	// HeaderEventRange is "<first event id>..<last event id>" of the batch, for people reading
	// receiver logs.
	HeaderEventRange = "X-Byok-Event-Range"
	HeaderEventCount = "X-Byok-Event-Count"
	HeaderTenant     = "X-Byok-Tenant"
	// HeaderAttempt counts delivery attempts of this batch by this process, from 1.
	HeaderAttempt = "X-Byok-Delivery-Attempt"
)

// Batch is the JSON body of a webhook delivery: {"tenant_id": "...", "events": [...]}. Events of
// one tenant only, in audit-topic order per partition.
type Batch struct {
	TenantID string  `json:"tenant_id"`
	Events   []Event `json:"events"`
}

// Event is an AuditEvent as JSON: the field names of schemas/proto/byok/v1/audit.proto, every
// field present (zero values included), time as RFC 3339 UTC with nanoseconds, prev_hash and hash
// as lowercase hex (so a receiver can re-check a chain with the documented audit.Hash bytes).
type Event struct {
	SchemaVersion uint32  `json:"schema_version"`
	EventID       string  `json:"event_id"`
	Time          string  `json:"time"`
	TenantID      string  `json:"tenant_id"`
	Provider      string  `json:"provider"`
	KEKID         string  `json:"kek_id"`
	KEKVersion    string  `json:"kek_version"`
	Operation     string  `json:"operation"`
	Scopes        []Scope `json:"scopes"`
	DEKCount      uint32  `json:"dek_count"`
	ActorService  string  `json:"actor_service"`
	ActorUser     string  `json:"actor_user"`
	Purpose       string  `json:"purpose"`
	Result        string  `json:"result"`
	ErrorCode     string  `json:"error_code"`
	FailedItems   uint32  `json:"failed_items"`
	LatencyMs     uint32  `json:"latency_ms"`
	WorkerID      string  `json:"worker_id"`
	RequestID     string  `json:"request_id"`
	Seq           uint64  `json:"seq"`
	PrevHash      string  `json:"prev_hash"`
	Hash          string  `json:"hash"`
	ChainID       string  `json:"chain_id"`
}

// Scope is one (chat, day) pair of an event.
type Scope struct {
	ChatID string `json:"chat_id"`
	Day    string `json:"day"`
}

// EventJSON converts an AuditEvent to its JSON shape.
func EventJSON(ev *byokv1.AuditEvent) Event {
	out := Event{
		SchemaVersion: ev.GetSchemaVersion(), EventID: ev.GetEventId(), TenantID: ev.GetTenantId(),
		Provider: ev.GetProvider(), KEKID: ev.GetKekId(), KEKVersion: ev.GetKekVersion(), Operation: ev.GetOperation(),
		Scopes: make([]Scope, 0, len(ev.GetScopes())), DEKCount: ev.GetDekCount(),
		ActorService: ev.GetActorService(), ActorUser: ev.GetActorUser(), Purpose: ev.GetPurpose(),
		Result: ev.GetResult(), ErrorCode: ev.GetErrorCode(), FailedItems: ev.GetFailedItems(), LatencyMs: ev.GetLatencyMs(),
		WorkerID: ev.GetWorkerId(), RequestID: ev.GetRequestId(), Seq: ev.GetSeq(),
		PrevHash: hex.EncodeToString(ev.GetPrevHash()), Hash: hex.EncodeToString(ev.GetHash()), ChainID: ev.GetChainId(),
	}
	if ev.GetTime() != nil {
		out.Time = ev.GetTime().AsTime().UTC().Format(time.RFC3339Nano)
	}
	for _, s := range ev.GetScopes() {
		out.Scopes = append(out.Scopes, Scope{ChatID: s.GetChatId(), Day: s.GetDay()})
	}
	return out
}

// Sign returns the X-Byok-Signature value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether header is body's valid signature under secret, in constant
// time. Receivers written in Go can use it.
func VerifySignature(secret, body []byte, header string) bool {
	want := Sign(secret, body)
	return hmac.Equal([]byte(want), []byte(strings.TrimSpace(header)))
}

// IdempotencyKey is the X-Byok-Idempotency-Key of a batch of events.
func IdempotencyKey(events []Event) string {
	h := sha256.New()
	for _, e := range events {
		h.Write([]byte(e.EventID))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}
