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

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	if h.MaxBatch == 0 {
		h.MaxBatch = 500
	}
	ctx := context.Background()

	wrapAll := func(t *testing.T, c kms.KMS, n int) ([][]byte, []kms.WrapResult) {
		t.Helper()
		deks := make([][]byte, n)
		reqs := make([]kms.WrapRequest, n)
		for i := range reqs {
			deks[i] = dek(t)
			reqs[i] = kms.WrapRequest{DEK: deks[i], Context: ctxOf(i)}
		}
		res, err := c.Wrap(ctx, reqs)
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
