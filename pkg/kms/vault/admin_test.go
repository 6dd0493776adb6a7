package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/vault"
)

// freshKey creates a transit key of a name no earlier run used (runs share one Vault).
func freshKey(t *testing.T, c *vaultapi.Client, derived bool) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, fmt.Sprintf("%s-%t-%d", t.Name(), derived, time.Now().UnixNano()))
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	if _, err := c.Logical().Write("transit/keys/"+name, map[string]any{"type": "aes256-gcm96", "derived": derived}); err != nil {
		t.Fatal(err)
	}
	return name
}

func adminClient(t *testing.T, addr, token string) *vault.Admin {
	t.Helper()
	a, err := vault.NewAdmin(vault.Credential{Address: addr, Token: token}, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// unwrapOne unwraps one DEK and returns it or the item's (or call's) error.
func unwrapOne(k kms.KMS, wrapped, scopeCtx []byte) ([]byte, error) {
	res, err := k.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: wrapped, Context: scopeCtx}})
	if err != nil {
		return nil, err
	}
	return res[0].DEK, res[0].Err
}

// TestAdminRotateRetireTrimDelete walks a key through its life and checks what unwraps at each
// step: rotation keeps old versions usable, retiring is reversible, trimming is not, deletion
// leaves nothing.
func TestAdminRotateRetireTrimDelete(t *testing.T) {
	ctx := context.Background()
	c, addr := admin(t)
	key := freshKey(t, c, true)
	a := adminClient(t, addr, c.Token())
	k := client(t, addr, c.Token(), key)
	dek := bytes.Repeat([]byte{3}, 32)
	scopeCtx := []byte("byok.scope.v1 admin-test")
	wrap := func(wantVersion string) []byte {
		t.Helper()
		w, err := k.Wrap(ctx, []kms.WrapRequest{{DEK: dek, Context: scopeCtx}})
		if err != nil || w[0].Err != nil || w[0].KEKVersion != wantVersion {
			t.Fatalf("Wrap = version %q, err %v / %v; want version %s", w[0].KEKVersion, err, w[0].Err, wantVersion)
		}
		return w[0].WrappedDEK
	}
	opens := func(what string, wrapped []byte, want error) {
		t.Helper()
		got, err := unwrapOne(k, wrapped, scopeCtx)
		if want == nil && (err != nil || !bytes.Equal(got, dek)) || want != nil && !errors.Is(err, want) {
			t.Fatalf("Unwrap(%s) err = %v, want %v", what, err, want)
		}
	}

	v, err := a.KeyVersions(ctx, key)
	if err != nil || v.Latest != 1 || v.MinDecryption != 1 || v.MinAvailable != 0 || !v.Derived || v.DeletionAllowed {
		t.Fatalf("KeyVersions(new key) = %+v, %v", v, err)
	}
	w1 := wrap("1")
	if v, err = a.RotateKey(ctx, key); err != nil || v.Latest != 2 || v.MinDecryption != 1 {
		t.Fatalf("RotateKey = %+v, %v; want latest 2, min decryption 1", v, err)
	}
	w2 := wrap("2")
	opens("v1 after rotation", w1, nil)

	if v, err = a.SetMinDecryptionVersion(ctx, key, 2); err != nil || v.MinDecryption != 2 {
		t.Fatalf("SetMinDecryptionVersion(2) = %+v, %v", v, err)
	}
	opens("v1 retired", w1, kms.ErrInvalidCiphertext)
	opens("v2", w2, nil)
	// Retiring is reversible: Vault still holds version 1.
	if _, err = a.SetMinDecryptionVersion(ctx, key, 1); err != nil {
		t.Fatal(err)
	}
	opens("v1 un-retired", w1, nil)

	// Trimming is not: version 1 is gone from Vault's storage.
	if v, err = a.TrimVersions(ctx, key, 2); err != nil || v.MinAvailable != 2 || v.MinDecryption != 2 || v.MinEncryption != 2 {
		t.Fatalf("TrimVersions(2) = %+v, %v; want min available, decryption and encryption 2", v, err)
	}
	if _, err = a.SetMinDecryptionVersion(ctx, key, 1); !errors.Is(err, vault.ErrRejected) {
		t.Fatalf("SetMinDecryptionVersion(1) after trim err = %v, want vault.ErrRejected (below min_available_version)", err)
	}
	opens("v1 trimmed", w1, kms.ErrInvalidCiphertext)
	opens("v2 after trim", w2, nil)

	// Deleting the key: nothing it wrapped unwraps, and the key is gone for Describe too.
	if err := a.DeleteKey(ctx, key); err != nil {
		t.Fatalf("DeleteKey err = %v", err)
	}
	opens("v2 after delete", w2, kms.ErrKeyNotFound)
	if _, err := k.Describe(ctx); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("Describe(deleted key) err = %v, want kms.ErrKeyNotFound", err)
	}
	if _, err := a.KeyVersions(ctx, key); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("KeyVersions(deleted key) err = %v, want kms.ErrKeyNotFound", err)
	}
	// A new key under the same name is new key material: the old DEKs stay unrecoverable.
	if _, err := c.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		t.Fatal(err)
	}
	opens("v2 under a re-created key of the same name", w2, kms.ErrInvalidCiphertext)
}

func TestAdminErrors(t *testing.T) {
	ctx := context.Background()
	c, addr := admin(t)
	key := freshKey(t, c, false)
	a := adminClient(t, addr, c.Token())
	for _, n := range []int{0, 7} {
		if _, err := a.SetMinDecryptionVersion(ctx, key, n); !errors.Is(err, vault.ErrRejected) {
			t.Errorf("SetMinDecryptionVersion(%d) on a key at version 1 err = %v, want vault.ErrRejected", n, err)
		}
	}
	if _, err := a.TrimVersions(ctx, key, 5); !errors.Is(err, vault.ErrRejected) {
		t.Errorf("TrimVersions(5) err = %v, want vault.ErrRejected", err)
	}
	if _, err := a.RotateKey(ctx, "no-such-key"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("RotateKey(unknown) err = %v, want kms.ErrKeyNotFound", err)
	}
	if err := a.DeleteKey(ctx, "no-such-key"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("DeleteKey(unknown) err = %v, want kms.ErrKeyNotFound", err)
	}

	// A token without admin rights: denied, and the error never carries the token.
	canary := fmt.Sprintf("byok-canary-admin-token-%d", time.Now().UnixNano())
	if _, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{ID: canary, Policies: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	weak := adminClient(t, addr, canary)
	checks := map[string]error{}
	_, checks["rotate"] = weak.RotateKey(ctx, key)
	_, checks["retire"] = weak.SetMinDecryptionVersion(ctx, key, 1)
	checks["delete"] = weak.DeleteKey(ctx, key)
	_, checks["versions"] = weak.KeyVersions(ctx, key)
	for op, err := range checks {
		if !errors.Is(err, kms.ErrAccessDenied) || strings.Contains(err.Error(), canary) {
			t.Errorf("%s with a weak token err = %v, want kms.ErrAccessDenied without the token", op, err)
		}
	}
	if _, err := a.KeyVersions(ctx, key); err != nil {
		t.Fatalf("the key must survive the weak token's delete: %v", err)
	}
}
