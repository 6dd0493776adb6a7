package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/scope"
)

// KMS wraps a tenant's kms.KMS so that every call is recorded before its result is used.
type KMS struct {
	inner    kms.KMS
	tenantID string
	log      *Log
	fallback Access // used when the call's context carries no Access
	observe  Observer
}

// Observer is told of every call the wrapper makes or refuses, after its event is recorded (or
// failed to be): provider, operation and result are audit's closed sets (result ResultNotRecorded
// when the event could not be recorded), deks the number of DEKs in the call. It must be safe for
// concurrent use and quick; metrics.KMS.Observe is one.
type Observer func(provider, operation, result string, deks int, latency time.Duration)

// ResultNotRecorded is an Observer result: the KMS answered but its event could not be recorded,
// so the answer was not used.
const ResultNotRecorded = "not_recorded"

var (
	_ kms.KMS       = (*KMS)(nil)
	_ kms.Rewrapper = (*KMS)(nil)
)

// Wrap returns k audited as tenantID's, with fallback as the actor/purpose of calls whose
// context has none.
func Wrap(k kms.KMS, tenantID string, log *Log, fallback Access) *KMS {
	return &KMS{inner: k, tenantID: tenantID, log: log, fallback: fallback}
}

// Observe makes a tell o of every call (nil: nobody) and returns a.
func (a *KMS) Observe(o Observer) *KMS {
	a.observe = o
	return a
}

// emit records ev and tells the observer.
func (a *KMS) emit(ctx context.Context, ev *byokv1.AuditEvent, start time.Time) error {
	err := a.log.Emit(ctx, ev)
	if a.observe != nil {
		result := ev.Result
		if err != nil {
			result = ResultNotRecorded
		}
		a.observe(ev.Provider, ev.Operation, result, int(ev.DekCount), time.Since(start))
	}
	return err
}

// Provider implements kms.KMS.
func (a *KMS) Provider() string { return a.inner.Provider() }

// KEKID implements kms.KMS.
func (a *KMS) KEKID() string { return a.inner.KEKID() }

// Close implements kms.KMS.
func (a *KMS) Close() error { return a.inner.Close() }

func (a *KMS) event(ctx context.Context, op string, contexts [][]byte, start time.Time) *byokv1.AuditEvent {
	acc, ok := AccessFrom(ctx)
	if !ok {
		acc = a.fallback
	}
	ev := &byokv1.AuditEvent{
		TenantId: a.tenantID, Provider: a.inner.Provider(), KekId: a.inner.KEKID(), Operation: op,
		DekCount: uint32(len(contexts)), ActorService: acc.ActorService, ActorUser: acc.ActorUser,
		Purpose: acc.Purpose, RequestId: acc.RequestID,
		LatencyMs: uint32(time.Since(start).Milliseconds()),
	}
	for _, c := range contexts {
		if s, ok := scope.ParseKMSContext(c); ok {
			ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: s.ChatID, Day: s.Day.String()})
		} else {
			ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: "?", Day: "?"})
		}
	}
	return ev
}

// ErrorCode names the KMS sentinel err wraps, for the error_code column.
func ErrorCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, kms.ErrAccessDenied):
		return "access_denied"
	case errors.Is(err, kms.ErrKeyNotFound):
		return "key_not_found"
	case errors.Is(err, kms.ErrInvalidCiphertext):
		return "invalid_ciphertext"
	case errors.Is(err, kms.ErrUnavailable):
		return "unavailable"
	default:
		return "other"
	}
}

// setResult fills result, error code and failed items from a call error and per-item errors.
func setResult(ev *byokv1.AuditEvent, callErr error, itemErrs []error) {
	first := callErr
	for _, e := range itemErrs {
		if e != nil {
			ev.FailedItems++
			if first == nil {
				first = e
			}
		}
	}
	if callErr != nil {
		ev.FailedItems = ev.DekCount
	}
	switch {
	case first == nil:
		ev.Result = ResultOK
	case errors.Is(first, kms.ErrAccessDenied):
		ev.Result = ResultDenied
	default:
		ev.Result = ResultError
	}
	ev.ErrorCode = ErrorCode(first)
}

func notRecorded(op string, err error) error {
	return fmt.Errorf("audit: %s: %w: %w", op, kms.ErrUnavailable, err)
}

// Wrap implements kms.KMS.
func (a *KMS) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	start := time.Now()
	res, err := a.inner.Wrap(ctx, reqs)
	contexts := make([][]byte, len(reqs))
	for i, r := range reqs {
		contexts[i] = r.Context
	}
	ev := a.event(ctx, OpWrap, contexts, start)
	var itemErrs []error
	for _, r := range res {
		itemErrs = append(itemErrs, r.Err)
		if r.KEKVersion != "" {
			ev.KekVersion = r.KEKVersion
		}
	}
	setResult(ev, err, itemErrs)
	if rerr := a.emit(ctx, ev, start); rerr != nil {
		return nil, notRecorded(OpWrap, rerr)
	}
	return res, err
}

// Unwrap implements kms.KMS. Unwrapped DEKs are zeroed if the event cannot be recorded.
func (a *KMS) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	start := time.Now()
	res, err := a.inner.Unwrap(ctx, reqs)
	contexts := make([][]byte, len(reqs))
	for i, r := range reqs {
		contexts[i] = r.Context
	}
	ev := a.event(ctx, OpUnwrap, contexts, start)
	var itemErrs []error
	for _, r := range res {
		itemErrs = append(itemErrs, r.Err)
	}
	setResult(ev, err, itemErrs)
	if rerr := a.emit(ctx, ev, start); rerr != nil {
		for _, r := range res {
			kms.Zero(r.DEK)
		}
		return nil, notRecorded(OpUnwrap, rerr)
	}
	return res, err
}

// Rewrap implements kms.Rewrapper: one "rewrap" event per call, with the scopes of the
// contexts and the KEK version the KMS moved the DEKs to. If the event cannot be recorded the
// rewrapped DEKs are not handed out. If the tenant's KMS is not a kms.Rewrapper the call fails
// with kms.ErrNotSupported before reaching it (no event: nothing was asked of the KMS).
func (a *KMS) Rewrap(ctx context.Context, reqs []kms.RewrapRequest) ([]kms.RewrapResult, error) {
	rw, ok := a.inner.(kms.Rewrapper)
	if !ok {
		return nil, fmt.Errorf("audit: rewrap: %s KMS cannot rewrap in place: %w", a.inner.Provider(), kms.ErrNotSupported)
	}
	start := time.Now()
	res, err := rw.Rewrap(ctx, reqs)
	contexts := make([][]byte, len(reqs))
	for i, r := range reqs {
		contexts[i] = r.Context
	}
	ev := a.event(ctx, OpRewrap, contexts, start)
	var itemErrs []error
	for _, r := range res {
		itemErrs = append(itemErrs, r.Err)
		if r.KEKVersion != "" {
			ev.KekVersion = r.KEKVersion
		}
	}
	setResult(ev, err, itemErrs)
	if rerr := a.emit(ctx, ev, start); rerr != nil {
		return nil, notRecorded(OpRewrap, rerr)
	}
	return res, err
}

// Describe implements kms.KMS.
func (a *KMS) Describe(ctx context.Context) (kms.KeyInfo, error) {
	start := time.Now()
	info, err := a.inner.Describe(ctx)
	ev := a.event(ctx, OpDescribe, nil, start)
	ev.KekVersion = info.LatestVersion
	setResult(ev, err, nil)
	if rerr := a.emit(ctx, ev, start); rerr != nil {
		return kms.KeyInfo{}, notRecorded(OpDescribe, rerr)
	}
	return info, err
}

// Resolver wraps a dek.Resolver so that every KMS it hands out is audited.
type Resolver struct {
	Inner    dek.Resolver
	Log      *Log
	Fallback Access
	Observe  Observer // optional: told of every call (metrics)
}

// KMSFor implements dek.Resolver.
func (r *Resolver) KMSFor(tenantID string) (kms.KMS, error) {
	k, err := r.Inner.KMSFor(tenantID)
	if err != nil {
		return nil, err
	}
	return Wrap(k, tenantID, r.Log, r.Fallback).Observe(r.Observe), nil
}

// Codes of calls refused by byok before they reach the KMS.
const (
	CodeScopeRevoked     = "scope_revoked"     // the customer revoked the chat or date range (granular revocation)
	CodePolicy           = "policy"            // byok's own policy refused it (caller not allowed for the tenant, …)
	CodeRevocationsStale = "revocations_stale" // the reader could not confirm its revocation list is current
)

// Refused records a call that byok refused before it reached the tenant's KMS — a revoked scope,
// a caller without rights — as a denied event with the given code, so the customer sees
// attempts as well as accesses. The call stays refused whether or not the event is recorded; the
// error is returned so the caller can report it.
func (a *KMS) Refused(ctx context.Context, op, code string, contexts [][]byte) error {
	start := time.Now()
	ev := a.event(ctx, op, contexts, start)
	ev.LatencyMs = 0
	ev.Result, ev.ErrorCode, ev.FailedItems = ResultDenied, code, ev.DekCount
	return a.emit(ctx, ev, start)
}
