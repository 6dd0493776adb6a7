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

// BatchSink is a Sink that can also store several events of one key in one round trip. It
// returns one error per value (nil: stored), or a single error for the whole call.
type BatchSink interface {
	Sink
	WriteBatch(ctx context.Context, key []byte, values [][]byte) ([]error, error)
}

// Log stamps events with ids and their hash chain and writes them to a Sink. One Log per process:
// its worker id names the process for people, its random chain id names its chains.
//
// Group commit. Each chain (tenant) has one writer at a time, so that seq, prev_hash and what is
// in the topic agree. Events that arrive while a write is in flight queue up and go out together
// in the next write (one round trip for up to MaxGroup events, with a BatchSink), so a tenant's
// events per second are not bounded by one acknowledgement per event.
type Log struct {
	sink     Sink
	workerID string
	chainID  string // random per Log: a restarted process starts new chains
	now      func() time.Time

	mu     sync.Mutex
	chains map[string]*chain // by tenant id
}

// MaxGroup is the most events of one chain written in one round trip.
const MaxGroup = 500

// writeTimeout bounds one group write (the sink retries inside it).
const writeTimeout = 30 * time.Second

type chain struct {
	mu       sync.Mutex
	seq      uint64
	prev     []byte
	queue    []*pending
	flushing bool // a goroutine is writing this chain's queue
}

// pending is one event waiting for its group's write.
type pending struct {
	ev   *byokv1.AuditEvent
	ctx  context.Context
	done chan error
}

// NewLog returns a Log writing to sink as workerID.
func NewLog(sink Sink, workerID string) *Log {
	return &Log{sink: sink, workerID: workerID, chainID: uuid.NewString(), now: time.Now, chains: map[string]*chain{}}
}

// Emit stamps ev (event id, time if unset, worker id, seq, prev_hash, hash) and writes it,
// returning once it is acknowledged. The chain advances only past events that were written. If
// ctx ends first, Emit returns an error wrapping ErrNotRecorded: the caller must not use the key
// (the event may still be written, recording an access that did not happen — the safe side).
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

	p := &pending{ev: ev, ctx: ctx, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	if !c.flushing {
		c.flushing = true
		go l.flush(c)
	}
	c.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrNotRecorded, ctx.Err())
	}
}

// flush writes c's queue in groups until it is empty.
func (l *Log) flush(c *chain) {
	c.mu.Lock()
	for len(c.queue) > 0 {
		var group []*pending
		rest := c.queue[:0:0]
		for _, p := range c.queue {
			switch {
			case p.ctx.Err() != nil: // its caller gave up: never written, never chained
				p.done <- fmt.Errorf("%w: %v", ErrNotRecorded, p.ctx.Err())
			case len(group) < MaxGroup:
				group = append(group, p)
			default:
				rest = append(rest, p)
			}
		}
		c.queue = rest
		if len(group) == 0 {
			continue
		}
		seq, prev := c.seq, c.prev
		values := make([][]byte, len(group))
		var marshalErr error
		for i, p := range group {
			p.ev.Seq, p.ev.PrevHash = seq+uint64(i), prev
			p.ev.Hash = Hash(p.ev)
			prev = p.ev.Hash
			if values[i], marshalErr = proto.Marshal(p.ev); marshalErr != nil {
				break
			}
		}
		c.mu.Unlock()
		var errs []error
		if marshalErr != nil {
			errs = fill(len(group), marshalErr)
		} else {
			errs = l.write(group[0].ev.TenantId, values)
		}
		c.mu.Lock()
		// Advance to the last event written. An earlier one that failed after later ones were
		// written leaves a gap Verify will report — the truth: that event is not in the topic
		// (and its key was not used).
		last := -1
		for i, err := range errs {
			if err == nil {
				last = i
			}
		}
		if last >= 0 {
			c.seq, c.prev = group[last].ev.Seq+1, group[last].ev.Hash
		}
		for i, p := range group {
			if errs[i] != nil {
				p.done <- fmt.Errorf("%w: %v", ErrNotRecorded, errs[i])
			} else {
				p.done <- nil
			}
		}
	}
	c.flushing = false
	c.mu.Unlock()
}

// write stores values under key, one error per value. With a BatchSink the values go in one call,
// and values that failed while others were stored are retried (same bytes: Verify orders by seq,
// not by position in the topic); otherwise one by one, stopping at the first failure.
func (l *Log) write(key string, values [][]byte) []error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	bs, ok := l.sink.(BatchSink)
	if !ok {
		errs := make([]error, len(values))
		for i, v := range values {
			if errs[i] = l.sink.Write(ctx, []byte(key), v); errs[i] != nil {
				for j := i + 1; j < len(values); j++ {
					errs[j] = errors.New("not written: an earlier event of its chain failed")
				}
				break
			}
		}
		return errs
	}
	errs, err := bs.WriteBatch(ctx, []byte(key), values)
	if err != nil {
		return fill(len(values), err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		var idx []int
		for i, e := range errs {
			if e != nil {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 || len(idx) == len(values) {
			break // all stored, or nothing was: no gap to close
		}
		retry := make([][]byte, len(idx))
		for k, i := range idx {
			retry[k] = values[i]
		}
		rerrs, err := bs.WriteBatch(ctx, []byte(key), retry)
		for k, i := range idx {
			if err != nil {
				errs[i] = err
			} else {
				errs[i] = rerrs[k]
			}
		}
	}
	return errs
}

func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
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
