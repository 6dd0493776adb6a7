package local_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/kmstest"
	"github.com/byok-io/byok/pkg/kms/local"
)

func keyFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(p, "kek-a", "kek-disabled"); err != nil {
		t.Fatal(err)
	}
	if err := local.Update(p, func(f *local.File) { f.Keys["kek-disabled"].Disabled = true }); err != nil {
		t.Fatal(err)
	}
	return p
}

// rotate adds version v of kekID with fresh key bytes and makes it the primary.
func rotate(t *testing.T, path, kekID, v string) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	if err := local.Update(path, func(f *local.File) {
		f.Keys[kekID].Versions[v] = base64.StdEncoding.EncodeToString(raw)
		f.Keys[kekID].Primary = v
	}); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[kms.KMS]string{} // client → its key file, for Rotate
	kmstest.Run(t, kmstest.Harness{
		New: func(t *testing.T) kms.KMS {
			p := keyFile(t)
			c := local.New(p, "kek-a")
			mu.Lock()
			paths[c] = p
			mu.Unlock()
			return c
		},
		Denied:      func(t *testing.T) kms.KMS { return local.New(keyFile(t), "kek-disabled") },
		Unavailable: func(t *testing.T) kms.KMS { return local.New(filepath.Join(t.TempDir(), "missing.json"), "kek-a") },
		UnknownKey:  func(t *testing.T) kms.KMS { return local.New(keyFile(t), "no-such-kek") },
		Rotate: func(t *testing.T, c kms.KMS) {
			mu.Lock()
			p := paths[c]
			mu.Unlock()
			rotate(t, p, "kek-a", "2")
		},
	})
}

// A retired version (removed from the key file) no longer unwraps, rewrapped DEKs do.
func TestRewrapThenRetire(t *testing.T) {
	ctx := context.Background()
	p := keyFile(t)
	c := local.New(p, "kek-a")
	dek := bytes.Repeat([]byte{7}, 32)
	scopeCtx := []byte("byok.scope.test|tenant|chat|1")
	w, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: dek, Context: scopeCtx}})
	if err != nil || w[0].Err != nil || w[0].KEKVersion != "1" {
		t.Fatalf("Wrap = %+v, %v; want version 1", w, err)
	}
	rotate(t, p, "kek-a", "2")
	rw, err := c.Rewrap(ctx, []kms.RewrapRequest{{WrappedDEK: w[0].WrappedDEK, Context: scopeCtx}})
	if err != nil || rw[0].Err != nil || rw[0].KEKVersion != "2" {
		t.Fatalf("Rewrap = %+v, %v; want version 2", rw, err)
	}
	if err := local.Update(p, func(f *local.File) { delete(f.Keys["kek-a"].Versions, "1") }); err != nil {
		t.Fatal(err)
	}
	u, err := c.Unwrap(ctx, []kms.UnwrapRequest{
		{WrappedDEK: w[0].WrappedDEK, Context: scopeCtx},
		{WrappedDEK: rw[0].WrappedDEK, Context: scopeCtx},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(u[0].Err, kms.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap(version 1 after retiring it) err = %v, want ErrInvalidCiphertext", u[0].Err)
	}
	if u[1].Err != nil || !bytes.Equal(u[1].DEK, dek) {
		t.Fatalf("Unwrap(rewrapped) err = %v, want the DEK", u[1].Err)
	}
}
