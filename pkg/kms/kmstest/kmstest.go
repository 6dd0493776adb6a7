// Package kmstest is the conformance suite every KMS provider passes: the same cases run against
// local, Vault and the cloud providers' emulators, so byok's behaviour does not depend on which
// KMS a tenant chose.
package kmstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/kms"
)

// Harness builds clients of the provider under test.
type Harness struct {
	// New returns a working client for a usable KEK.
	New func(t *testing.T) kms.KMS
	// Denied returns a client whose credential may not use the KEK (or whose KEK is disabled).
	Denied func(t *testing.T) kms.KMS
	// Unavailable returns a client whose KMS cannot be reached.
	Unavailable func(t *testing.T) kms.KMS
	// UnknownKey returns a client for a KEK that does not exist.
	UnknownKey func(t *testing.T) kms.KMS
	// MaxBatch is the largest batch the suite sends in one call (default 500).
	MaxBatch int
	// Rotate adds a version to c's KEK and makes it the latest, as the customer rotating the key
	// would. The Rewrap cases run only when it is set (and the provider is a kms.Rewrapper): they
	// check that a rewrap moves DEKs to the new version.
	Rotate func(t *testing.T, c kms.KMS)
	// SkipRewrap, if not empty, says why a rewrap of what Wrap made cannot succeed against this
	// provider although it implements kms.Rewrapper; the cases that need one are skipped with
	// that reason (the failure cases still run). A provider test that sets it should pin the
	// limitation with a test of its own.
	SkipRewrap string
}

func dek(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxOf(i int) []byte { return []byte(fmt.Sprintf("byok.scope.test|tenant|chat-%d|20426", i)) }

// itemErr returns the error for item i: the call's error if the whole call failed.
func itemErr[T any](results []T, callErr error, i int, get func(T) error) error {
	if callErr != nil {
		return callErr
	}
	if i >= len(results) {
		return fmt.Errorf("kmstest: %d results, want index %d", len(results), i)
	}
	return get(results[i])
}

func wrapErr(r kms.WrapResult) error     { return r.Err }
func unwrapErr(r kms.UnwrapResult) error { return r.Err }

// wrapAll wraps n fresh DEKs, DEK i under ctxOf(i), and checks every result.
func wrapAll(t *testing.T, c kms.KMS, n int) ([][]byte, []kms.WrapResult) {
	t.Helper()
	deks := make([][]byte, n)
	reqs := make([]kms.WrapRequest, n)
	for i := range reqs {
		deks[i] = dek(t)
		reqs[i] = kms.WrapRequest{DEK: deks[i], Context: ctxOf(i)}
	}
	res, err := c.Wrap(context.Background(), reqs)
	if err != nil {
		t.Fatalf("Wrap(%d) err = %v", n, err)
	}
	if len(res) != n {
		t.Fatalf("Wrap(%d) returned %d results", n, len(res))
	}
	for i, r := range res {
		if r.Err != nil || len(r.WrappedDEK) == 0 || r.KEKVersion == "" {
			t.Fatalf("Wrap item %d = %+v, want a wrapped DEK and a KEK version", i, r)
		}
		if bytes.Contains(r.WrappedDEK, deks[i]) {
			t.Fatalf("Wrap item %d: wrapped DEK contains the plaintext DEK", i)
		}
	}
	return deks, res
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	if h.MaxBatch == 0 {
		h.MaxBatch = 500
	}
	ctx := context.Background()

	t.Run("Describe", func(t *testing.T) {
		c := h.New(t)
		info, err := c.Describe(ctx)
		if err != nil {
			t.Fatalf("Describe err = %v", err)
		}
		if info.Provider != c.Provider() || info.KEKID != c.KEKID() || info.LatestVersion == "" {
			t.Fatalf("Describe = %+v, want provider %q key %q and a version", info, c.Provider(), c.KEKID())
		}
	})

	t.Run("RoundTripBatchInOrder", func(t *testing.T) {
		c := h.New(t)
		deks, wrapped := wrapAll(t, c, h.MaxBatch)
		// Unwrap in reverse order to prove results follow requests, not some internal order.
		reqs := make([]kms.UnwrapRequest, len(deks))
		for i := range reqs {
			j := len(deks) - 1 - i
			reqs[i] = kms.UnwrapRequest{WrappedDEK: wrapped[j].WrappedDEK, Context: ctxOf(j)}
		}
		res, err := c.Unwrap(ctx, reqs)
		if err != nil || len(res) != len(reqs) {
			t.Fatalf("Unwrap(%d) = %d results, err %v", len(reqs), len(res), err)
		}
		for i, r := range res {
			j := len(deks) - 1 - i
			if r.Err != nil || !bytes.Equal(r.DEK, deks[j]) {
				t.Fatalf("Unwrap item %d err = %v, DEK matches = %v", i, r.Err, bytes.Equal(r.DEK, deks[j]))
			}
		}
	})

	t.Run("WrongContextFails", func(t *testing.T) {
		c := h.New(t)
		_, wrapped := wrapAll(t, c, 1)
		res, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: wrapped[0].WrappedDEK, Context: ctxOf(99)}})
		if e := itemErr(res, err, 0, unwrapErr); !errors.Is(e, kms.ErrInvalidCiphertext) {
			t.Fatalf("Unwrap(other context) err = %v, want ErrInvalidCiphertext", e)
		}
	})

	t.Run("PerItemErrorsKept", func(t *testing.T) {
		c := h.New(t)
		deks, wrapped := wrapAll(t, c, 3)
		corrupt := bytes.Clone(wrapped[1].WrappedDEK)
		corrupt[len(corrupt)/2] ^= 0x20
		reqs := []kms.UnwrapRequest{
			{WrappedDEK: wrapped[0].WrappedDEK, Context: ctxOf(0)},
			{WrappedDEK: corrupt, Context: ctxOf(1)},
			{WrappedDEK: wrapped[2].WrappedDEK, Context: ctxOf(2)},
		}
		res, err := c.Unwrap(ctx, reqs)
		if err != nil {
			t.Fatalf("Unwrap(mixed batch) call err = %v, want per-item errors", err)
		}
		if res[0].Err != nil || !bytes.Equal(res[0].DEK, deks[0]) || res[2].Err != nil || !bytes.Equal(res[2].DEK, deks[2]) {
			t.Fatalf("Unwrap(mixed batch) good items: %v, %v", res[0].Err, res[2].Err)
		}
		if !errors.Is(res[1].Err, kms.ErrInvalidCiphertext) {
			t.Fatalf("Unwrap(corrupt item) err = %v, want ErrInvalidCiphertext", res[1].Err)
		}
	})

	t.Run("Denied", func(t *testing.T) {
		c := h.Denied(t)
		res, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: dek(t), Context: ctxOf(0)}})
		if e := itemErr(res, err, 0, wrapErr); !errors.Is(e, kms.ErrAccessDenied) {
			t.Fatalf("Wrap(denied) err = %v, want ErrAccessDenied", e)
		}
		if kms.Retryable(err) {
			t.Fatal("denied access must not be retryable")
		}
		ures, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: []byte("whatever-wrapped-dek-bytes-000000000000"), Context: ctxOf(0)}})
		if e := itemErr(ures, err, 0, unwrapErr); !errors.Is(e, kms.ErrAccessDenied) {
			t.Fatalf("Unwrap(denied) err = %v, want ErrAccessDenied", e)
		}
	})

	t.Run("Unavailable", func(t *testing.T) {
		c := h.Unavailable(t)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		start := time.Now()
		res, err := c.Wrap(cctx, []kms.WrapRequest{{DEK: dek(t), Context: ctxOf(0)}})
		if e := itemErr(res, err, 0, wrapErr); !errors.Is(e, kms.ErrUnavailable) || !kms.Retryable(e) {
			t.Fatalf("Wrap(unavailable) err = %v, want retryable ErrUnavailable", e)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("Wrap(unavailable) took %v: a dead KMS must fail fast enough to retry", d)
		}
	})

	t.Run("UnknownKey", func(t *testing.T) {
		c := h.UnknownKey(t)
		if _, err := c.Describe(ctx); !errors.Is(err, kms.ErrKeyNotFound) {
			t.Fatalf("Describe(unknown key) err = %v, want ErrKeyNotFound", err)
		}
		res, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: []byte("whatever-wrapped-dek-bytes-000000000000"), Context: ctxOf(0)}})
		if e := itemErr(res, err, 0, unwrapErr); !errors.Is(e, kms.ErrKeyNotFound) && !errors.Is(e, kms.ErrInvalidCiphertext) {
			t.Fatalf("Unwrap(unknown key) err = %v, want ErrKeyNotFound", e)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		c := h.New(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		res, err := c.Wrap(cctx, []kms.WrapRequest{{DEK: dek(t), Context: ctxOf(0)}})
		if e := itemErr(res, err, 0, wrapErr); e == nil {
			t.Fatal("Wrap(cancelled ctx) err = nil, want an error")
		}
	})

	t.Run("Rewrap", func(t *testing.T) {
		if h.Rotate == nil {
			t.Skip("the harness cannot rotate the KEK (Harness.Rotate): a rewrap cannot be told from a no-op")
		}
		RunRewrap(t, h)
	})

	t.Run("Concurrent", func(t *testing.T) {
		c := h.New(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					d := dek(t)
					w, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: d, Context: ctxOf(g)}})
					if err != nil || w[0].Err != nil {
						errs <- fmt.Errorf("Wrap: %v %v", err, w)
						return
					}
					u, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: w[0].WrappedDEK, Context: ctxOf(g)}})
					if err != nil || u[0].Err != nil || !bytes.Equal(u[0].DEK, d) {
						errs <- fmt.Errorf("Unwrap: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
}

func rewrapErr(r kms.RewrapResult) error { return r.Err }

// RunRewrap runs the Rewrap cases of the suite (Run runs them when h.Rotate is set): a rewrapped
// DEK unwraps to the same DEK under the same context and under no other, at the KEK's latest
// version; a wrong context or garbage fails its own item only; denied access maps to the
// sentinel. They are skipped for a provider that does not implement kms.Rewrapper.
func RunRewrap(t *testing.T, h Harness) {
	if _, ok := h.New(t).(kms.Rewrapper); !ok {
		t.Skip("provider does not implement kms.Rewrapper")
	}
	ctx := context.Background()
	rewrapper := func(t *testing.T) (kms.KMS, kms.Rewrapper) {
		c := h.New(t)
		return c, c.(kms.Rewrapper)
	}

	t.Run("SameDEKLatestVersion", func(t *testing.T) {
		if h.SkipRewrap != "" {
			t.Skip(h.SkipRewrap)
		}
		c, rw := rewrapper(t)
		deks, wrapped := wrapAll(t, c, 3)
		if h.Rotate != nil {
			h.Rotate(t, c)
		}
		info, err := c.Describe(ctx)
		if err != nil {
			t.Fatalf("Describe err = %v", err)
		}
		reqs := make([]kms.RewrapRequest, len(deks))
		for i := range reqs {
			reqs[i] = kms.RewrapRequest{WrappedDEK: wrapped[i].WrappedDEK, Context: ctxOf(i)}
		}
		res, err := rw.Rewrap(ctx, reqs)
		if err != nil || len(res) != len(reqs) {
			t.Fatalf("Rewrap(%d) = %d results, err %v", len(reqs), len(res), err)
		}
		for i, r := range res {
			if r.Err != nil || len(r.WrappedDEK) == 0 {
				t.Fatalf("Rewrap item %d err = %v, want a wrapped DEK", i, r.Err)
			}
			if bytes.Contains(r.WrappedDEK, deks[i]) {
				t.Fatalf("Rewrap item %d: wrapped DEK contains the plaintext DEK", i)
			}
			if r.KEKVersion != info.LatestVersion {
				t.Fatalf("Rewrap item %d KEK version = %q, want the latest %q", i, r.KEKVersion, info.LatestVersion)
			}
			if h.Rotate != nil && r.KEKVersion == wrapped[i].KEKVersion {
				t.Fatalf("Rewrap item %d after a rotation stayed at version %q", i, r.KEKVersion)
			}
		}
		for i, r := range res {
			u, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: r.WrappedDEK, Context: ctxOf(i)}})
			if e := itemErr(u, err, 0, unwrapErr); e != nil || !bytes.Equal(u[0].DEK, deks[i]) {
				t.Fatalf("Unwrap(rewrapped item %d) err = %v, want the original DEK", i, e)
			}
			u, err = c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: r.WrappedDEK, Context: ctxOf(99)}})
			if e := itemErr(u, err, 0, unwrapErr); !errors.Is(e, kms.ErrInvalidCiphertext) {
				t.Fatalf("Unwrap(rewrapped item %d, other context) err = %v, want ErrInvalidCiphertext", i, e)
			}
		}
	})

	t.Run("WrongContextFails", func(t *testing.T) {
		c, rw := rewrapper(t)
		_, wrapped := wrapAll(t, c, 1)
		res, err := rw.Rewrap(ctx, []kms.RewrapRequest{{WrappedDEK: wrapped[0].WrappedDEK, Context: ctxOf(99)}})
		if e := itemErr(res, err, 0, rewrapErr); !errors.Is(e, kms.ErrInvalidCiphertext) {
			t.Fatalf("Rewrap(other context) err = %v, want ErrInvalidCiphertext", e)
		}
	})

	t.Run("PerItemErrorsKept", func(t *testing.T) {
		if h.SkipRewrap != "" {
			t.Skip(h.SkipRewrap)
		}
		c, rw := rewrapper(t)
		deks, wrapped := wrapAll(t, c, 2)
		reqs := []kms.RewrapRequest{
			{WrappedDEK: wrapped[0].WrappedDEK, Context: ctxOf(0)},
			{WrappedDEK: []byte("garbage-not-a-wrapped-dek-0000000000000000"), Context: ctxOf(1)},
			{WrappedDEK: wrapped[1].WrappedDEK, Context: ctxOf(1)},
		}
		res, err := rw.Rewrap(ctx, reqs)
		if err != nil || len(res) != len(reqs) {
			t.Fatalf("Rewrap(mixed batch) = %d results, call err %v; want per-item errors", len(res), err)
		}
		if !errors.Is(res[1].Err, kms.ErrInvalidCiphertext) {
			t.Fatalf("Rewrap(garbage item) err = %v, want ErrInvalidCiphertext", res[1].Err)
		}
		for i, j := range map[int]int{0: 0, 2: 1} {
			if res[i].Err != nil {
				t.Fatalf("Rewrap(mixed batch) good item %d err = %v", i, res[i].Err)
			}
			u, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: res[i].WrappedDEK, Context: ctxOf(j)}})
			if e := itemErr(u, err, 0, unwrapErr); e != nil || !bytes.Equal(u[0].DEK, deks[j]) {
				t.Fatalf("Unwrap(rewrapped good item %d) err = %v, want the original DEK", i, e)
			}
		}
	})

	t.Run("Denied", func(t *testing.T) {
		c := h.Denied(t)
		rw, ok := c.(kms.Rewrapper)
		if !ok {
			t.Skip("the denied client is not a kms.Rewrapper")
		}
		res, err := rw.Rewrap(ctx, []kms.RewrapRequest{{WrappedDEK: []byte("whatever-wrapped-dek-bytes-000000000000"), Context: ctxOf(0)}})
		if e := itemErr(res, err, 0, rewrapErr); !errors.Is(e, kms.ErrAccessDenied) {
			t.Fatalf("Rewrap(denied) err = %v, want ErrAccessDenied", e)
		}
	})
}
