// Package audit records every KMS access byok makes: an AuditEvent per call (who, why, which
// scopes, result, latency), chained per tenant and emitter by SHA-256 hashes, written to the audit
// topic with acknowledgement from all in-sync replicas before the key material is used.
//
// Emission is a wrapper on the KMS seam (KMS, Resolver), so no provider can forget it. If the
// event cannot be recorded the call's result is discarded — wrapped DEKs are not handed out and
// unwrapped DEKs are zeroed — and the caller gets kms.ErrUnavailable: fail closed, as Vault does
// with its own audit devices.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// Operations.
const (
	OpWrap     = "wrap"
	OpUnwrap   = "unwrap"
	OpRewrap   = "rewrap"
	OpDescribe = "describe"
	OpValidate = "validate"
)

// Operations of the customer's control actions, recorded on the same chains as KMS accesses: the
// key owner sees who changed the settings or revoked what, and when.
const (
	// OpSettingsChange: a tenant's settings were saved (enabled/disabled, provider, KEK id or
	// credential changed). Purpose says which: "enable", "disable", "update".
	OpSettingsChange = "settings_change"
	// OpRevoke and OpUnrevoke: a granular revocation was published or withdrawn. Scopes hold the
	// chat ("" for every chat) and the day range "from..to" (either end may be empty).
	OpRevoke   = "revoke"
	OpUnrevoke = "unrevoke"
	// OpRotate: the tenant's KEK was rotated in its KMS by byok's tooling.
	OpRotate = "rotate"
)

// Results.
const (
	ResultOK     = "ok"
	ResultDenied = "denied"
	ResultError  = "error"
)

// ErrNotRecorded wraps a failure to record an event; the KMS result was not used.
var ErrNotRecorded = errors.New("audit: event not recorded, key not used")

// Access says who asks for a key and why. It travels in the context of a KMS call.
type Access struct {
	ActorService string // the calling service's identity, e.g. "encryptor"
	ActorUser    string // the user on whose behalf, if any
	Purpose      string // "encrypt", "render", "search-index", "export", …
	RequestID    string
}

type accessKey struct{}

// WithAccess returns ctx carrying a.
func WithAccess(ctx context.Context, a Access) context.Context {
	return context.WithValue(ctx, accessKey{}, a)
}

// AccessFrom returns the Access in ctx, if any.
func AccessFrom(ctx context.Context) (Access, bool) {
	a, ok := ctx.Value(accessKey{}).(Access)
	return a, ok
}

// Sink durably stores one serialised event under key (the tenant id). It returns only after the
// event is acknowledged (for Kafka: by all in-sync replicas). Safe for concurrent use.
type Sink interface {
	Write(ctx context.Context, key, value []byte) error
}

// Log stamps events with ids and their hash chain and writes them to a Sink. One Log per process:
// its worker id names the process for people, its random chain id names its chains.
type Log struct {
	sink     Sink
	workerID string
	chainID  string // random per Log: a restarted process starts new chains
	now      func() time.Time

	mu     sync.Mutex
	chains map[string]*chain // by tenant id
}

type chain struct {
	mu   sync.Mutex // held across the write, so the chain's order is the topic's order
	seq  uint64
	prev []byte
}

// NewLog returns a Log writing to sink as workerID.
func NewLog(sink Sink, workerID string) *Log {
	return &Log{sink: sink, workerID: workerID, chainID: uuid.NewString(), now: time.Now, chains: map[string]*chain{}}
}

// Emit stamps ev (event id, time if unset, worker id, seq, prev_hash, hash) and writes it. The
// chain advances only when the write succeeded.
func (l *Log) Emit(ctx context.Context, ev *byokv1.AuditEvent) error {
	l.mu.Lock()
	c := l.chains[ev.TenantId]
	if c == nil {
		c = &chain{}
		l.chains[ev.TenantId] = c
	}
	l.mu.Unlock()

	ev.SchemaVersion = 1
	if ev.EventId == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("%w: event id: %v", ErrNotRecorded, err)
		}
		ev.EventId = id.String()
	}
	if ev.Time == nil {
		ev.Time = timestamppb.New(l.now())
	}
	ev.WorkerId, ev.ChainId = l.workerID, l.chainID

	c.mu.Lock()
	defer c.mu.Unlock()
	ev.Seq, ev.PrevHash = c.seq, c.prev
	ev.Hash = Hash(ev)
	value, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotRecorded, err)
	}
	if err := l.sink.Write(ctx, []byte(ev.TenantId), value); err != nil {
		return fmt.Errorf("%w: %v", ErrNotRecorded, err)
	}
	c.seq++
	c.prev = ev.Hash
	return nil
}

// Hash is the SHA-256 of an event's canonical bytes: every field but hash, in field-number order,
// strings and bytes length-prefixed (u32), integers big-endian, the time as unix seconds (i64) and
// nanoseconds (u32), scopes as a count then chat/day pairs. This function is the specification:
// change it only with a new schema_version.
func Hash(ev *byokv1.AuditEvent) []byte {
	h := sha256.New()
	var b []byte
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	str := func(s string) { u32(uint32(len(s))); b = append(b, s...) }
	u32(ev.SchemaVersion)
	str(ev.EventId)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Time.GetSeconds()))
	u32(uint32(ev.Time.GetNanos()))
	for _, s := range []string{ev.TenantId, ev.Provider, ev.KekId, ev.KekVersion, ev.Operation} {
		str(s)
	}
	u32(uint32(len(ev.Scopes)))
	for _, s := range ev.Scopes {
		str(s.ChatId)
		str(s.Day)
	}
	u32(ev.DekCount)
	for _, s := range []string{ev.ActorService, ev.ActorUser, ev.Purpose, ev.Result, ev.ErrorCode} {
		str(s)
	}
	u32(ev.FailedItems)
	u32(ev.LatencyMs)
	str(ev.WorkerId)
	str(ev.RequestId)
	b = binary.BigEndian.AppendUint64(b, ev.Seq)
	str(string(ev.PrevHash))
	str(ev.ChainId)
	h.Write(b)
	return h.Sum(nil)
}
