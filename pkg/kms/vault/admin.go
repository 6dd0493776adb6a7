package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/kms"
)

// ErrRejected: Vault refused an admin request as invalid (a version out of range, a trim before
// retiring, …). The error text carries Vault's reason. Not retried.
var ErrRejected = errors.New("vault: request rejected")

// Admin manages transit keys with the customer's security-team token: rotate, retire old
// versions, trim them for good, delete a key. It is tooling (byokctl key …), not something byok's
// services hold: their tokens may only encrypt, decrypt, rewrap and read the key. Vault's own
// audit devices record these calls; they touch no DEK, so byok's audit wrapper does not.
// Safe for concurrent use.
type Admin struct {
	api   *vaultapi.Client
	mount string
}

// NewAdmin returns an admin client for the transit mount of cred. It makes no call yet.
func NewAdmin(cred Credential, opts Options) (*Admin, error) {
	c, err := New(cred, "", opts)
	if err != nil {
		return nil, err
	}
	return &Admin{api: c.api, mount: c.mount}, nil
}

// KeyVersions are a transit key's version settings, as GET transit/keys/<name> reports them.
// Vault numbers versions from 1; a zero MinEncryption means "the latest".
type KeyVersions struct {
	Latest          int  // the version new wraps use
	MinDecryption   int  // the oldest version Vault will still decrypt (retire = raise it)
	MinEncryption   int  // the oldest version a caller may ask to encrypt with (0: latest only by default)
	MinAvailable    int  // versions below it are deleted from Vault's storage (trim); 0: none trimmed
	DeletionAllowed bool // the key may be deleted
	Derived         bool // per-context key derivation (byok's recommended setup)
}

func (v KeyVersions) String() string {
	return fmt.Sprintf("latest_version=%d min_decryption_version=%d min_encryption_version=%d min_available_version=%d",
		v.Latest, v.MinDecryption, v.MinEncryption, v.MinAvailable)
}

// KeyVersions reads the version settings of transit key name.
func (a *Admin) KeyVersions(ctx context.Context, name string) (KeyVersions, error) {
	s, err := a.api.Logical().ReadWithContext(ctx, a.mount+"/keys/"+name)
	if err != nil {
		return KeyVersions{}, adminErr("read key", name, err)
	}
	if s == nil || s.Data == nil {
		return KeyVersions{}, fmt.Errorf("vault: read key %s: %w", name, kms.ErrKeyNotFound)
	}
	var v KeyVersions
	for field, dst := range map[string]*int{
		"latest_version": &v.Latest, "min_decryption_version": &v.MinDecryption,
		"min_encryption_version": &v.MinEncryption, "min_available_version": &v.MinAvailable,
	} {
		if *dst, err = intField(s.Data[field]); err != nil {
			return KeyVersions{}, fmt.Errorf("vault: read key %s: %s: %w", name, field, err)
		}
	}
	v.DeletionAllowed, _ = s.Data["deletion_allowed"].(bool)
	v.Derived, _ = s.Data["derived"].(bool)
	return v, nil
}

// RotateKey adds a new version to transit key name: from now on Wrap uses it, while every older
// version still unwraps until it is retired. It returns the settings after the rotation.
func (a *Admin) RotateKey(ctx context.Context, name string) (KeyVersions, error) {
	if _, err := a.api.Logical().WriteWithContext(ctx, a.mount+"/keys/"+name+"/rotate", nil); err != nil {
		return KeyVersions{}, adminErr("rotate", name, err)
	}
	return a.KeyVersions(ctx, name)
}

// SetMinDecryptionVersion retires the versions of transit key name below n: Vault refuses to
// unwrap DEKs wrapped under them (kms.ErrInvalidCiphertext for each item). It is reversible —
// Vault keeps the retired versions until TrimVersions — so it is not crypto-shredding.
func (a *Admin) SetMinDecryptionVersion(ctx context.Context, name string, n int) (KeyVersions, error) {
	if n < 1 {
		return KeyVersions{}, fmt.Errorf("vault: retire %s: min_decryption_version %d: %w: versions start at 1", name, n, ErrRejected)
	}
	if _, err := a.api.Logical().WriteWithContext(ctx, a.mount+"/keys/"+name+"/config", map[string]any{"min_decryption_version": n}); err != nil {
		return KeyVersions{}, adminErr("retire", name, err)
	}
	return a.KeyVersions(ctx, name)
}

// TrimVersions deletes the versions of transit key name below n from Vault's storage, for good:
// what they wrapped can no longer be unwrapped by anyone, whatever the key's settings later say.
// Vault requires n ≤ min_decryption_version, so TrimVersions first raises min_encryption_version
// (and min_decryption_version) to n when they are lower.
func (a *Admin) TrimVersions(ctx context.Context, name string, n int) (KeyVersions, error) {
	v, err := a.KeyVersions(ctx, name)
	if err != nil {
		return KeyVersions{}, err
	}
	if n < 1 || n > v.Latest {
		return KeyVersions{}, fmt.Errorf("vault: trim %s: min_available_version %d: %w: want 1..%d", name, n, ErrRejected, v.Latest)
	}
	cfg := map[string]any{}
	if v.MinEncryption < n {
		cfg["min_encryption_version"] = n
	}
	if v.MinDecryption < n {
		cfg["min_decryption_version"] = n
	}
	if len(cfg) > 0 {
		if _, err := a.api.Logical().WriteWithContext(ctx, a.mount+"/keys/"+name+"/config", cfg); err != nil {
			return KeyVersions{}, adminErr("trim", name, err)
		}
	}
	if _, err := a.api.Logical().WriteWithContext(ctx, a.mount+"/keys/"+name+"/trim", map[string]any{"min_available_version": n}); err != nil {
		return KeyVersions{}, adminErr("trim", name, err)
	}
	return a.KeyVersions(ctx, name)
}

// DeleteKey destroys transit key name with every version (crypto-shredding a tenant): every
// DEK it wrapped, and so every envelope sealed under those DEKs, becomes unrecoverable — as far
// as Vault's own storage goes: backups and snapshots of Vault taken before still hold the key.
// It first allows deletion on the key (deletion_allowed=true), which Vault requires.
func (a *Admin) DeleteKey(ctx context.Context, name string) error {
	if _, err := a.api.Logical().WriteWithContext(ctx, a.mount+"/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		return adminErr("allow deletion", name, err)
	}
	if _, err := a.api.Logical().DeleteWithContext(ctx, a.mount+"/keys/"+name); err != nil {
		return adminErr("delete", name, err)
	}
	return nil
}

// intField reads a JSON number field; Vault omits some (min_encryption_version) when zero.
func intField(v any) (int, error) {
	switch n := v.(type) {
	case nil:
		return 0, nil
	case json.Number:
		i, err := strconv.Atoi(n.String())
		if err != nil {
			return 0, fmt.Errorf("not an integer: %q", n.String())
		}
		return i, nil
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("unexpected type %T", v)
}

// adminErr maps an admin call's failure. Unlike mapErr, a 400 is a refused setting
// (ErrRejected), not a ciphertext. Vault's messages name keys and versions, never tokens.
func adminErr(op, key string, err error) error {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrAccessDenied)
		case re.StatusCode == http.StatusNotFound, strings.Contains(msg, "not found"), strings.Contains(msg, "no existing key"):
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrKeyNotFound)
		case re.StatusCode == http.StatusBadRequest:
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, ErrRejected)
		}
	}
	return mapErr(op, key, err)
}
