// Package kms declares the seam between byok and a tenant's key management service: wrap and
// unwrap many DEKs in one call, describe the key, and the sentinel errors every provider maps its
// failures onto.
//
// Implementations live one per package (kms/local, kms/vault, …) and all pass the shared
// conformance suite in kms/kmstest. Cross-cutting behaviour — retry, audit, metrics, batching —
// wraps this interface; providers do not implement it themselves.
package kms

import (
	"context"
	"errors"
)

// Sentinel errors. Providers wrap them (fmt.Errorf("vault: …: %w", kms.ErrAccessDenied)) so that
// errors.Is works through every layer. Only ErrUnavailable is worth retrying.
var (
	// ErrKeyNotFound: the KEK does not exist (or the credential cannot see it).
	ErrKeyNotFound = errors.New("kms: key not found")
	// ErrAccessDenied: the credential is not allowed this operation, the key is disabled, or the
	// key owner revoked access. Never retried.
	ErrAccessDenied = errors.New("kms: access denied")
	// ErrUnavailable: the KMS could not be reached or answered with a transient failure.
	ErrUnavailable = errors.New("kms: unavailable")
	// ErrInvalidCiphertext: a wrapped DEK that this key cannot unwrap in this context
	// (corrupted, wrapped under another key or scope, or a KEK version that is no longer allowed).
	ErrInvalidCiphertext = errors.New("kms: invalid ciphertext")
)

// Retryable reports whether err is worth retrying with backoff.
func Retryable(err error) bool { return errors.Is(err, ErrUnavailable) }

// WrapRequest asks for one DEK to be wrapped, bound to Context (the scope's KMS context).
type WrapRequest struct {
	DEK     []byte
	Context []byte
}

// WrapResult is the outcome for one WrapRequest, at the same index.
type WrapResult struct {
	WrappedDEK []byte // opaque to byok; what Unwrap takes back
	KEKVersion string // the KEK version the KMS used, as it names it
	Err        error  // per-item failure, wrapping a sentinel
}

// UnwrapRequest asks for one wrapped DEK back, with the Context it was wrapped under.
type UnwrapRequest struct {
	WrappedDEK []byte
	Context    []byte
}

// UnwrapResult is the outcome for one UnwrapRequest, at the same index. The caller owns DEK and
// must zero it when done.
type UnwrapResult struct {
	DEK []byte
	Err error
}

// KeyInfo describes the tenant's KEK as the KMS reports it.
type KeyInfo struct {
	Provider      string
	KEKID         string
	LatestVersion string
}

// KMS is one tenant's KEK in one provider, reached with that tenant's credential.
//
// Wrap and Unwrap take many items and return one result per item, in order. A non-nil error
// return means the whole call failed (nothing was wrapped or unwrapped); otherwise each result
// carries its own error. Implementations must be safe for concurrent use and must honour ctx.
type KMS interface {
	// Provider is the provider name recorded in envelopes: "vault", "yandex", "cloudru", "local".
	Provider() string
	// KEKID is the tenant's key id in its KMS.
	KEKID() string
	Wrap(ctx context.Context, reqs []WrapRequest) ([]WrapResult, error)
	Unwrap(ctx context.Context, reqs []UnwrapRequest) ([]UnwrapResult, error)
	// Describe checks the key exists and is usable with this credential.
	Describe(ctx context.Context) (KeyInfo, error)
	Close() error
}

// Zero overwrites b with zeros. Go offers no guarantee that no copy survives elsewhere (the
// runtime may have moved it), but byok never makes copies of plaintext DEKs on purpose.
func Zero(b []byte) {
	clear(b)
}

// ErrNotSupported: the provider (or a wrapper in front of it) does not offer the operation, e.g.
// Rewrap on a KMS that is not a Rewrapper. Never retried.
var ErrNotSupported = errors.New("kms: operation not supported")

// RewrapRequest asks for one wrapped DEK to be re-encrypted under the KEK's latest version, with
// the Context it was wrapped under (the rewrapped DEK stays bound to the same Context).
type RewrapRequest struct {
	WrappedDEK []byte
	Context    []byte
}

// RewrapResult is the outcome for one RewrapRequest, at the same index.
type RewrapResult struct {
	WrappedDEK []byte // the same DEK, wrapped under KEKVersion
	KEKVersion string // the KEK version the KMS used, as it names it
	Err        error  // per-item failure, wrapping a sentinel
}

// Rewrapper is implemented by providers that can move a wrapped DEK to the KEK's latest version
// inside the KMS, so that the DEK's plaintext never leaves it (Vault transit `rewrap`). It is
// optional: check for it with a type assertion. Rewrap has Wrap's per-item semantics — a non-nil
// error return means nothing was rewrapped — and must be safe for concurrent use and honour ctx.
type Rewrapper interface {
	Rewrap(ctx context.Context, reqs []RewrapRequest) ([]RewrapResult, error)
}
