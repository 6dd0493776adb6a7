package api

import (
	"cmp"
	"context"
	"crypto/cipher"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/scope"
)

// OpReadCached is the audit operation of reads served from the DEK cache: no KMS call was made,
// but the key owner still sees who read which scopes and why (see Reader).
const OpReadCached = "read_cached"

// Per-item error reasons. They are fixed phrases: never a body, a token or a KMS error text
// (which can carry addresses).
const (
	ReasonTenantNotAllowed = "tenant not allowed"
	ReasonRevoked          = "access revoked by the key owner"
	ReasonScopeRevoked     = "access to this chat or period revoked by the key owner"
	ReasonRevocationsStale = "revocation list not current, key not used; retry later"
	ReasonKeyNotFound      = "key not found in the tenant's KMS"
	ReasonKMSUnavailable   = "tenant's KMS unavailable, retry later"
	ReasonAuditUnavailable = "audit unavailable, key not used; retry later"
	ReasonNoKMS            = "tenant has no KMS configured"
	ReasonMalformed        = "envelope is malformed or unsupported"
	ReasonDoesNotOpen      = "envelope does not open for this message id"
)

var (
	errPolicy       = errors.New(ReasonTenantNotAllowed)
	errNotRecorded  = errors.New(ReasonAuditUnavailable)
	errScopeRevoked = errors.New(ReasonScopeRevoked)
	errStale        = errors.New(ReasonRevocationsStale)
)

// Reason maps a read error onto its client-facing reason.
func Reason(err error) string {
	switch {
	case errors.Is(err, errPolicy):
		return ReasonTenantNotAllowed
	case errors.Is(err, errScopeRevoked):
		return ReasonScopeRevoked
	case errors.Is(err, errStale):
		return ReasonRevocationsStale
	case errors.Is(err, errNotRecorded), errors.Is(err, audit.ErrNotRecorded):
		return ReasonAuditUnavailable
	case errors.Is(err, kms.ErrAccessDenied):
		return ReasonRevoked
	case errors.Is(err, kms.ErrKeyNotFound):
		return ReasonKeyNotFound
	case errors.Is(err, dek.ErrNoKMS):
		return ReasonNoKMS
	case errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrUnsupported):
		return ReasonMalformed
	case errors.Is(err, envelope.ErrOpen), errors.Is(err, kms.ErrInvalidCiphertext), errors.Is(err, deccache.ErrNotAESKey):
		return ReasonDoesNotOpen
	default:
		return ReasonKMSUnavailable
	}
}

// Reader opens envelopes for authenticated callers: authorization first, then granular
// revocations, then the DEK cache, then one audited Unwrap per tenant per MaxBatch missing DEKs.
//
// Revocation. A scope the customer revoked (a chat, a date range) is refused before the cache and
// the KMS, and the refusal is recorded with audit's Refused, code "scope_revoked". The revocation
// list is a followed view of the revocations topic (pkg/control); if it has not been confirmed
// current within MaxStaleness, every read fails closed (recorded, when the audit log can be
// reached, with code "revocations_stale"): a reader cut off from Kafka must not keep serving
// scopes revoked meanwhile.
//
// Audit. Every KMS call goes through Resolver (an *audit.Resolver), recorded with the caller as
// actor service, on_behalf_of as actor user, and the purpose. Reads the reader refuses (a tenant
// the caller may not read) are recorded with audit's Refused, code "policy". Reads served from the
// cache are recorded too, as one OpReadCached event per tenant per request, on the same hash
// chains: the cache is shared by all callers, so without it a second caller reading a scope
// within the TTL of a first would never appear in the key owner's audit. The same rule as for KMS
// calls holds: if that event cannot be recorded, the cached DEK is not used.
//
// With CachedAudit = CachedAuditAsync the operator trades a little of that rule for latency: a
// cache hit is answered at once and its event written in the background (at most MaxAsyncEvents
// in flight, more wait as in sync mode). If a background write fails, cache hits go back to being
// recorded before they are answered until a write succeeds again, so an audit outage costs at
// most the events in flight (counted in Stats().CachedEventsLost) — and a crash loses those in
// flight. KMS calls are always recorded before their result is used, in both modes.
type Reader struct {
	// Resolver gives each tenant's KMS, audited: an *audit.Resolver in the service.
	Resolver dek.Resolver
	// Log is the audit log Resolver writes to, for refused and cached reads.
	Log *audit.Log
	// Cache holds unwrapped DEKs for their TTL.
	Cache *deccache.Cache
	// Revocations, when set, refuses revoked scopes: a *control.View in the service.
	Revocations Revocations
	// MaxStaleness is how long ago Revocations must last have been confirmed current (default 5s).
	MaxStaleness time.Duration
	// MaxBatch is the most DEKs unwrapped in one KMS call (default 500).
	MaxBatch int
	// CallTimeout bounds one KMS call (default 10s).
	CallTimeout time.Duration
	// CachedAudit is CachedAuditSync (the default, "") or CachedAuditAsync; see above.
	CachedAudit string
	// MaxAsyncEvents bounds background read_cached writes in flight (default 1024).
	MaxAsyncEvents int

	stats readerStats

	asyncOnce sync.Once
	asyncSem  chan struct{}
	asyncWG   sync.WaitGroup
	degraded  atomic.Bool // a background write failed: record cache hits synchronously
}

// Modes of recording cache hits (Reader.CachedAudit).
const (
	CachedAuditSync  = "sync"
	CachedAuditAsync = "async"
)

// Revocations answers whether a scope is revoked (granular revocation).
type Revocations interface {
	Revoked(s scope.Scope) (*byokv1.Revocation, bool)
	SyncedWithin(d time.Duration) bool
}

type readerStats struct {
	ok, failed, refused, revoked, scopeRevoked, stale, cachedReads, cachedLost atomic.Int64
}

// ReaderStats are counters since start.
type ReaderStats struct {
	ItemsOK, ItemsFailed int64
	Refused              int64 // items refused by policy
	Revoked              int64 // items failed with "access revoked by the key owner"
	ScopeRevoked         int64 // items refused by a granular revocation
	Stale                int64 // items refused because the revocation list was not current
	CachedEvents         int64 // OpReadCached audit events recorded
	CachedEventsLost     int64 // OpReadCached events written in the background that failed (async mode)
}

// Stats returns the counters.
func (r *Reader) Stats() ReaderStats {
	return ReaderStats{ItemsOK: r.stats.ok.Load(), ItemsFailed: r.stats.failed.Load(),
		Refused: r.stats.refused.Load(), Revoked: r.stats.revoked.Load(), ScopeRevoked: r.stats.scopeRevoked.Load(),
		Stale: r.stats.stale.Load(), CachedEvents: r.stats.cachedReads.Load(), CachedEventsLost: r.stats.cachedLost.Load()}
}

// ReadRequest is one authenticated request.
type ReadRequest struct {
	Caller     *callers.Caller
	OnBehalfOf string
	Purpose    string
	RequestID  string
}

// ReadItem is one envelope to open.
type ReadItem struct {
	MessageID string
	Envelope  []byte
}

type ref struct {
	key  deccache.Key
	kref envelope.KeyRef
}

// Open returns each item's body or error, at the same index.
func (r *Reader) Open(ctx context.Context, req ReadRequest, items []ReadItem) ([][]byte, []error) {
	bodies := make([][]byte, len(items))
	errs := make([]error, len(items))
	ctx = audit.WithAccess(ctx, audit.Access{ActorService: req.Caller.Name, ActorUser: req.OnBehalfOf,
		Purpose: req.Purpose, RequestID: req.RequestID})

	envs := make([]*envelope.Envelope, len(items))
	keys := make([]deccache.Key, len(items))
	refused := map[string][]ref{}   // tenant → distinct refs refused by policy
	revoked := map[string][]ref{}   // tenant → distinct refs refused by a granular revocation
	staleRefs := map[string][]ref{} // tenant → distinct refs refused: revocation list not current
	hits := map[string][]ref{}      // tenant → distinct refs found in the cache
	misses := map[string][]ref{}    // tenant → distinct refs to unwrap
	aeads := map[deccache.Key]cipher.AEAD{}
	failed := map[deccache.Key]error{}
	stale := r.Revocations != nil && !r.Revocations.SyncedWithin(cmp.Or(r.MaxStaleness, 5*time.Second))
	for i, it := range items {
		e, err := envelope.Parse(it.Envelope)
		if err != nil {
			errs[i] = err
			continue
		}
		envs[i] = e
		t := e.Scope.TenantID
		k := deccache.Key{Tenant: t, WrappedDEK: string(e.Key.WrappedDEK), Context: string(e.Scope.KMSContext())}
		keys[i] = k
		if _, done := aeads[k]; done {
			continue
		}
		if _, done := failed[k]; done {
			continue
		}
		// Authorization comes before the cache: a cached DEK is no licence.
		if !req.Caller.Allowed(t) {
			failed[k] = errPolicy
			refused[t] = append(refused[t], ref{k, e.Key})
			continue
		}
		if r.Revocations != nil {
			if stale {
				failed[k] = errStale
				staleRefs[t] = append(staleRefs[t], ref{k, e.Key})
				continue
			}
			if _, ok := r.Revocations.Revoked(e.Scope); ok {
				failed[k] = errScopeRevoked
				revoked[t] = append(revoked[t], ref{k, e.Key})
				continue
			}
		}
		if a, ok := r.Cache.Get(k); ok {
			aeads[k] = a
			hits[t] = append(hits[t], ref{k, e.Key})
			continue
		}
		failed[k] = nil // pending
		misses[t] = append(misses[t], ref{k, e.Key})
	}

	for t, refs := range refused {
		r.refuse(ctx, t, audit.CodePolicy, refs)
	}
	for t, refs := range revoked {
		r.refuse(ctx, t, audit.CodeScopeRevoked, refs)
	}
	for t, refs := range staleRefs {
		r.refuse(ctx, t, audit.CodeRevocationsStale, refs)
	}
	for t, refs := range hits {
		if err := r.recordCached(ctx, t, refs); err != nil {
			for _, rf := range refs {
				delete(aeads, rf.key)
				failed[rf.key] = err
			}
		}
	}
	for t, refs := range misses {
		r.unwrap(ctx, t, refs, aeads, failed)
	}

	for i, e := range envs {
		if e == nil {
			continue
		}
		if a, ok := aeads[keys[i]]; ok {
			bodies[i], errs[i] = envelope.Open(a, e, items[i].MessageID)
		} else {
			errs[i] = failed[keys[i]]
		}
	}
	for _, err := range errs {
		switch {
		case err == nil:
			r.stats.ok.Add(1)
			continue
		case errors.Is(err, errPolicy):
			r.stats.refused.Add(1)
		case errors.Is(err, errScopeRevoked):
			r.stats.scopeRevoked.Add(1)
		case errors.Is(err, errStale):
			r.stats.stale.Add(1)
		case errors.Is(err, kms.ErrAccessDenied):
			r.stats.revoked.Add(1)
		}
		r.stats.failed.Add(1)
	}
	return bodies, errs
}

func contexts(refs []ref) [][]byte {
	out := make([][]byte, len(refs))
	for i, rf := range refs {
		out[i] = []byte(rf.key.Context)
	}
	return out
}

// envelopeKMS names the KMS an envelope says it was wrapped by, for events about calls that never
// reach a KMS (refused and cached reads).
type envelopeKMS struct {
	kms.KMS // nil: only Provider and KEKID are called
	kref    envelope.KeyRef
}

func (e envelopeKMS) Provider() string { return e.kref.Provider }
func (e envelopeKMS) KEKID() string    { return e.kref.KEKID }

// refuse records the refusal of refs with code (policy, scope_revoked). The items stay refused
// whether or not it is recorded.
func (r *Reader) refuse(ctx context.Context, tenant, code string, refs []ref) {
	_ = audit.Wrap(envelopeKMS{kref: refs[0].kref}, tenant, r.Log, audit.Access{}).
		Refused(ctx, audit.OpUnwrap, code, contexts(refs))
}

// recordCached records reads served from the cache as one OpReadCached event.
func (r *Reader) recordCached(ctx context.Context, tenant string, refs []ref) error {
	acc, _ := audit.AccessFrom(ctx)
	ev := &byokv1.AuditEvent{
		TenantId: tenant, Provider: refs[0].kref.Provider, KekId: refs[0].kref.KEKID, KekVersion: refs[0].kref.KEKVersion,
		Operation: OpReadCached, DekCount: uint32(len(refs)), ActorService: acc.ActorService, ActorUser: acc.ActorUser,
		Purpose: acc.Purpose, RequestId: acc.RequestID, Result: audit.ResultOK,
	}
	for _, rf := range refs {
		s, ok := scope.ParseKMSContext([]byte(rf.key.Context))
		if !ok {
			ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: "?", Day: "?"})
			continue
		}
		ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: s.ChatID, Day: s.Day.String()})
	}
	if r.CachedAudit == CachedAuditAsync && !r.degraded.Load() {
		r.asyncOnce.Do(func() { r.asyncSem = make(chan struct{}, cmp.Or(r.MaxAsyncEvents, 1024)) })
		select {
		case r.asyncSem <- struct{}{}:
			r.asyncWG.Add(1)
			go func() {
				defer r.asyncWG.Done()
				defer func() { <-r.asyncSem }()
				ectx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := r.Log.Emit(ectx, ev); err != nil {
					r.degraded.Store(true)
					r.stats.cachedLost.Add(1)
					return
				}
				r.stats.cachedReads.Add(1)
			}()
			return nil
		default: // too many in flight: this one waits for its record
		}
	}
	if err := r.Log.Emit(ctx, ev); err != nil {
		return errNotRecorded
	}
	r.degraded.Store(false)
	r.stats.cachedReads.Add(1)
	return nil
}

// Flush waits until background audit writes (async mode) are done or ctx ends. Call it before
// closing the audit sink.
func (r *Reader) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() { r.asyncWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unwrap unwraps refs of one tenant in batches, caching each DEK it gets. A denial (the key owner
// revoked byok's access or disabled the key) also drops every DEK of the tenant still cached:
// revocation wins over the cache as soon as byok learns of it, and at the latest at the TTL.
func (r *Reader) unwrap(ctx context.Context, tenant string, refs []ref, aeads map[deccache.Key]cipher.AEAD, failed map[deccache.Key]error) {
	maxBatch := r.MaxBatch
	if maxBatch <= 0 {
		maxBatch = 500
	}
	timeout := r.CallTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	client, err := r.Resolver.KMSFor(tenant)
	denied := false
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), maxBatch)]
		refs = refs[len(chunk):]
		if err != nil {
			for _, rf := range chunk {
				failed[rf.key] = err
			}
			continue
		}
		reqs := make([]kms.UnwrapRequest, len(chunk))
		for i, rf := range chunk {
			reqs[i] = kms.UnwrapRequest{WrappedDEK: []byte(rf.key.WrappedDEK), Context: []byte(rf.key.Context)}
		}
		at := r.Cache.Now()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		res, cerr := client.Unwrap(cctx, reqs)
		cancel()
		for i, rf := range chunk {
			switch {
			case cerr != nil:
				failed[rf.key] = cerr
			case i >= len(res):
				failed[rf.key] = kms.ErrUnavailable
			case res[i].Err != nil:
				failed[rf.key] = res[i].Err
			default:
				a, perr := r.Cache.Put(rf.key, res[i].DEK, at)
				if perr != nil {
					failed[rf.key] = perr
					continue
				}
				delete(failed, rf.key)
				aeads[rf.key] = a
			}
			if errors.Is(failed[rf.key], kms.ErrAccessDenied) {
				denied = true
			}
		}
	}
	if denied {
		r.Cache.DropTenant(tenant)
	}
}
