// Package rotate moves stored envelopes to their tenant's latest KEK version after the customer
// rotated the key in their KMS: it rewraps each envelope's wrapped DEK and writes a new envelope
// with only the key reference replaced. The nonce and body ciphertext are copied byte for byte —
// the body is never decrypted and the envelope's AAD (tenant, chat, day, message id) does not
// cover the key reference, so the new envelope opens with the same DEK as the old one.
//
// Two methods, chosen by the caller:
//
//   - MethodRewrap asks the KMS to rewrap (kms.Rewrapper, e.g. Vault transit `rewrap`): the DEK's
//     plaintext never leaves the KMS. Vault's rewrap ignores associated_data, which byok binds
//     every DEK with, so this fails on Vault today (see pkg/kms/vault and docs/rotation.md).
//   - MethodUnwrapWrap unwraps each DEK and wraps it again through the tenant's KMS: the DEK is in
//     this process's memory for the length of one batch and zeroed right after, as on the read
//     path. Works with every provider.
//
// Every KMS call goes through the kms.KMS it is given, which in byok is the audit wrapper (the
// events say "rewrap", or "unwrap" and "wrap", with the actor and purpose of ctx). Stream applies
// Rewrap to a Kafka storage topic. Deleting old versions (retire, trim) and keys (crypto-shredding)
// is the customer's, in their KMS: see pkg/kms/vault.Admin and docs/rotation.md.
package rotate

import (
	"context"
	"errors"
	"fmt"

	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/kms"
)

// Method says how a wrapped DEK moves to the latest KEK version.
type Method string

// Methods.
const (
	// MethodRewrap: the KMS rewraps (kms.Rewrapper); the DEK never leaves the KMS.
	MethodRewrap Method = "rewrap"
	// MethodUnwrapWrap: unwrap, then wrap again at once; the DEK is in memory for one batch.
	MethodUnwrapWrap Method = "unwrap-wrap"
)

// DefaultMaxBatch is the default number of distinct wrapped DEKs in one KMS call.
const DefaultMaxBatch = 500

// Options tune Rewrap. The zero value is MethodRewrap with DefaultMaxBatch.
type Options struct {
	Method   Method
	MaxBatch int // distinct wrapped DEKs per KMS call (default DefaultMaxBatch)
}

func (o *Options) validate() error {
	if o.Method == "" {
		o.Method = MethodRewrap
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Method != MethodRewrap && o.Method != MethodUnwrapWrap {
		return fmt.Errorf("rotate: method %q: want %q or %q", o.Method, MethodRewrap, MethodUnwrapWrap)
	}
	return nil
}

// Per-envelope errors besides the envelope's and the KMS's own.
var (
	// ErrOtherTenant: the envelope's scope names another tenant than the one being rotated.
	ErrOtherTenant = errors.New("rotate: envelope of another tenant")
	// ErrOtherKEK: the envelope's DEK is wrapped under another provider or KEK than the tenant's
	// current one (the tenant moved KMS): rewrapping it needs the old KMS, not a rotation.
	ErrOtherKEK = errors.New("rotate: envelope wrapped under another KEK")
)

// Result is the outcome for one envelope, at the same index.
type Result struct {
	// Envelope is the rewrapped envelope; the input itself when Current; nil when Err is set.
	Envelope []byte
	// Current reports an envelope already at the KEK's latest version: returned unchanged, not
	// sent to the KMS.
	Current bool
	// FromVersion and ToVersion are the KEK versions before and after ("" when unknown).
	FromVersion, ToVersion string
	Err                    error
}

type dekRef struct {
	wrapped string
	context string
}

type rewrapped struct {
	wrapped []byte
	version string
	err     error
}

// Rewrap rewraps the DEKs of tenantID's envelopes under the latest version of k's KEK, as k's
// Describe reports it, and returns one Result per envelope. Envelopes that share a wrapped DEK
// (one per scope) cost one KMS item; at most opts.MaxBatch distinct DEKs go in one call.
//
// k must be the tenant's KMS, audited; with MethodRewrap it must implement kms.Rewrapper (the
// audit wrapper does, and fails with kms.ErrNotSupported if the provider cannot). A non-nil
// error means the run stopped: Describe failed (no Result), or a KMS call failed as a whole — the
// items of that call and every one not sent yet carry the same error.
func Rewrap(ctx context.Context, k kms.KMS, tenantID string, envelopes [][]byte, opts Options) ([]Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	rw, isRewrapper := k.(kms.Rewrapper)
	if opts.Method == MethodRewrap && !isRewrapper {
		return nil, fmt.Errorf("rotate: %s KMS cannot rewrap in place: %w", k.Provider(), kms.ErrNotSupported)
	}
	info, err := k.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotate: describe the KEK of tenant %s: %w", tenantID, err)
	}
	latest := info.LatestVersion

	results := make([]Result, len(envelopes))
	envs := make([]*envelope.Envelope, len(envelopes))
	var refs []dekRef
	seen := map[dekRef]bool{}
	for i, b := range envelopes {
		e, err := envelope.Parse(b)
		if err != nil {
			results[i].Err = err
			continue
		}
		results[i].FromVersion = e.Key.KEKVersion
		switch {
		case e.Scope.TenantID != tenantID:
			results[i].Err = fmt.Errorf("%w: %s, not %s", ErrOtherTenant, e.Scope.TenantID, tenantID)
			continue
		case e.Key.Provider != k.Provider() || e.Key.KEKID != k.KEKID():
			results[i].Err = fmt.Errorf("%w: %s key %s, the tenant's is %s key %s", ErrOtherKEK, e.Key.Provider, e.Key.KEKID, k.Provider(), k.KEKID())
			continue
		case latest != "" && e.Key.KEKVersion == latest:
			results[i] = Result{Envelope: b, Current: true, FromVersion: latest, ToVersion: latest}
			continue
		}
		envs[i] = e
		ref := dekRef{string(e.Key.WrappedDEK), string(e.Scope.KMSContext())}
		if !seen[ref] {
			seen[ref] = true
			refs = append(refs, ref)
		}
	}

	done := make(map[dekRef]rewrapped, len(refs))
	var stop error
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), opts.MaxBatch)]
		refs = refs[len(chunk):]
		if stop == nil {
			if opts.Method == MethodRewrap {
				stop = rewrapInKMS(ctx, rw, chunk, done)
			} else {
				stop = unwrapWrap(ctx, k, chunk, done)
			}
			if stop != nil {
				stop = fmt.Errorf("rotate: tenant %s: %w", tenantID, stop)
			}
		}
		if stop != nil {
			for _, r := range chunk {
				done[r] = rewrapped{err: stop}
			}
		}
	}

	for i, e := range envs {
		if e == nil {
			continue
		}
		r := done[dekRef{string(e.Key.WrappedDEK), string(e.Scope.KMSContext())}]
		switch {
		case r.err != nil:
			results[i].Err = r.err
		case len(r.wrapped) == 0 || len(r.wrapped) > envelope.MaxWrappedDEKLen || len(r.version) > envelope.MaxKEKVersionLen:
			results[i].Err = fmt.Errorf("rotate: the KMS returned a wrapped DEK of %d bytes, version of %d: outside the envelope's limits: %w",
				len(r.wrapped), len(r.version), kms.ErrInvalidCiphertext)
		default:
			// Only the key reference changes; Marshal copies the nonce and ciphertext as they are.
			ne := *e
			ne.Key.WrappedDEK, ne.Key.KEKVersion = r.wrapped, r.version
			results[i].Envelope, results[i].ToVersion = ne.Marshal(), r.version
		}
	}
	return results, stop
}

// rewrapInKMS rewraps chunk in one kms.Rewrapper call.
func rewrapInKMS(ctx context.Context, rw kms.Rewrapper, chunk []dekRef, done map[dekRef]rewrapped) error {
	reqs := make([]kms.RewrapRequest, len(chunk))
	for i, r := range chunk {
		reqs[i] = kms.RewrapRequest{WrappedDEK: []byte(r.wrapped), Context: []byte(r.context)}
	}
	res, err := rw.Rewrap(ctx, reqs)
	if err == nil && len(res) != len(reqs) {
		err = fmt.Errorf("rewrap returned %d results for %d DEKs: %w", len(res), len(reqs), kms.ErrUnavailable)
	}
	if err != nil {
		return err
	}
	for i, r := range chunk {
		if res[i].Err != nil {
			done[r] = rewrapped{err: fmt.Errorf("rotate: rewrap: %w", res[i].Err)}
			continue
		}
		done[r] = rewrapped{wrapped: res[i].WrappedDEK, version: res[i].KEKVersion}
	}
	return nil
}

// unwrapWrap unwraps chunk in one call and wraps the DEKs again in another; every unwrapped DEK
// is zeroed before it returns.
func unwrapWrap(ctx context.Context, k kms.KMS, chunk []dekRef, done map[dekRef]rewrapped) error {
	ureqs := make([]kms.UnwrapRequest, len(chunk))
	for i, r := range chunk {
		ureqs[i] = kms.UnwrapRequest{WrappedDEK: []byte(r.wrapped), Context: []byte(r.context)}
	}
	ures, err := k.Unwrap(ctx, ureqs)
	defer func() {
		for _, u := range ures {
			kms.Zero(u.DEK)
		}
	}()
	if err == nil && len(ures) != len(ureqs) {
		err = fmt.Errorf("unwrap returned %d results for %d DEKs: %w", len(ures), len(ureqs), kms.ErrUnavailable)
	}
	if err != nil {
		return err
	}
	var wreqs []kms.WrapRequest
	var wrefs []dekRef
	for i, r := range chunk {
		if ures[i].Err != nil {
			done[r] = rewrapped{err: fmt.Errorf("rotate: unwrap: %w", ures[i].Err)}
			continue
		}
		wreqs = append(wreqs, kms.WrapRequest{DEK: ures[i].DEK, Context: []byte(r.context)})
		wrefs = append(wrefs, r)
	}
	if len(wreqs) == 0 {
		return nil
	}
	wres, err := k.Wrap(ctx, wreqs)
	if err == nil && len(wres) != len(wreqs) {
		err = fmt.Errorf("wrap returned %d results for %d DEKs: %w", len(wres), len(wreqs), kms.ErrUnavailable)
	}
	if err != nil {
		return err
	}
	for i, r := range wrefs {
		if wres[i].Err != nil {
			done[r] = rewrapped{err: fmt.Errorf("rotate: wrap: %w", wres[i].Err)}
			continue
		}
		done[r] = rewrapped{wrapped: wres[i].WrappedDEK, version: wres[i].KEKVersion}
	}
	return nil
}
