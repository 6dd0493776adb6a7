// Package local is a KMS provider backed by a key file on the byok host. It exists for
// development, tests and the zero-setup demo: the KEK sits next to the data it protects, so it
// gives none of BYOK's guarantees and is never a production default.
//
// The key file is JSON, read on every call so that edits (a new version, "disabled": true) take
// effect at once:
//
//	{"keys": {"dev-kek": {"primary": "1", "versions": {"1": "<base64 32 bytes>"}, "disabled": false}}}
//
// A missing or unreadable file maps to kms.ErrUnavailable, an unknown key id to
// kms.ErrKeyNotFound, a disabled key to kms.ErrAccessDenied.
package local

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/byok-io/byok/pkg/kms"
)

// Provider is the provider name of this package.
const Provider = "local"

// File is the key file's layout.
type File struct {
	Keys map[string]*Key `json:"keys"`
}

// Key is one KEK with its versions.
type Key struct {
	Primary  string            `json:"primary"`
	Versions map[string]string `json:"versions"` // version → base64 AES-256 key
	Disabled bool              `json:"disabled,omitempty"`
}

// Client is one KEK of a key file.
type Client struct {
	path  string
	kekID string
	calls atomic.Int64
}

var (
	_ kms.KMS       = (*Client)(nil)
	_ kms.Rewrapper = (*Client)(nil)
)

// New returns a client for KEK kekID in the key file at path. It does not read the file yet.
func New(path, kekID string) *Client { return &Client{path: path, kekID: kekID} }

// Provider implements kms.KMS.
func (c *Client) Provider() string { return Provider }

// KEKID implements kms.KMS.
func (c *Client) KEKID() string { return c.kekID }

// Calls is the number of Wrap/Unwrap/Describe calls made, for tests and the demo's report.
func (c *Client) Calls() int64 { return c.calls.Load() }

// Close implements kms.KMS.
func (c *Client) Close() error { return nil }

func (c *Client) load() (*Key, error) {
	b, err := os.ReadFile(c.path)
	if err != nil {
		return nil, fmt.Errorf("local: read key file: %w", kms.ErrUnavailable)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("local: key file is not valid JSON: %w", kms.ErrUnavailable)
	}
	k, ok := f.Keys[c.kekID]
	if !ok {
		return nil, fmt.Errorf("local: key %q: %w", c.kekID, kms.ErrKeyNotFound)
	}
	if k.Disabled {
		return nil, fmt.Errorf("local: key %q is disabled: %w", c.kekID, kms.ErrAccessDenied)
	}
	return k, nil
}

func (k *Key) aead(version string) (cipher.AEAD, error) {
	enc, ok := k.Versions[version]
	if !ok {
		return nil, fmt.Errorf("local: KEK version %q: %w", version, kms.ErrInvalidCiphertext)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("local: KEK version %q is not 32 base64 bytes: %w", version, kms.ErrUnavailable)
	}
	block, err := aes.NewCipher(raw)
	kms.Zero(raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Wrap implements kms.KMS. Wrapped form: u8 len ‖ version ‖ nonce(12) ‖ AES-GCM(DEK, aad=context).
func (c *Client) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	c.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: wrap: %w: %v", kms.ErrUnavailable, err)
	}
	k, err := c.load()
	if err != nil {
		return nil, err
	}
	aead, err := k.aead(k.Primary)
	if err != nil {
		return nil, err
	}
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range reqs {
		w, err := seal(aead, k.Primary, r.DEK, r.Context)
		if err != nil {
			return nil, err
		}
		out[i] = kms.WrapResult{WrappedDEK: w, KEKVersion: k.Primary}
	}
	return out, nil
}

// seal wraps dek under aead, the KEK of version.
func seal(aead cipher.AEAD, version string, dek, context []byte) ([]byte, error) {
	w := make([]byte, 0, 1+len(version)+12+len(dek)+16)
	w = append(w, byte(len(version)))
	w = append(w, version...)
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	w = append(w, nonce...)
	return aead.Seal(w, nonce, dek, context), nil
}

// Unwrap implements kms.KMS.
func (c *Client) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	c.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: unwrap: %w: %v", kms.ErrUnavailable, err)
	}
	k, err := c.load()
	if err != nil {
		return nil, err
	}
	out := make([]kms.UnwrapResult, len(reqs))
	for i, r := range reqs {
		out[i].DEK, out[i].Err = unwrapOne(k, r)
	}
	return out, nil
}

func unwrapOne(k *Key, r kms.UnwrapRequest) ([]byte, error) {
	w := r.WrappedDEK
	if len(w) < 1 || len(w) < 1+int(w[0])+12+16 {
		return nil, fmt.Errorf("local: wrapped DEK too short: %w", kms.ErrInvalidCiphertext)
	}
	version, rest := string(w[1:1+w[0]]), w[1+w[0]:]
	aead, err := k.aead(version)
	if err != nil {
		return nil, err
	}
	dek, err := aead.Open(nil, rest[:12], rest[12:], r.Context)
	if err != nil {
		return nil, fmt.Errorf("local: unwrap: %w", kms.ErrInvalidCiphertext)
	}
	return dek, nil
}

// Rewrap implements kms.Rewrapper: each wrapped DEK is unwrapped and wrapped again under the
// primary version, bound to the same context. The key file plays the KMS here, so the DEK is in
// this process's memory for the moment of the rewrap and zeroed right after — the guarantee a
// real KMS's rewrap gives (the DEK never leaves it) does not exist for a local key.
func (c *Client) Rewrap(ctx context.Context, reqs []kms.RewrapRequest) ([]kms.RewrapResult, error) {
	c.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: rewrap: %w: %v", kms.ErrUnavailable, err)
	}
	k, err := c.load()
	if err != nil {
		return nil, err
	}
	aead, err := k.aead(k.Primary)
	if err != nil {
		return nil, err
	}
	out := make([]kms.RewrapResult, len(reqs))
	for i, r := range reqs {
		dek, err := unwrapOne(k, kms.UnwrapRequest(r))
		if err != nil {
			out[i].Err = err
			continue
		}
		w, err := seal(aead, k.Primary, dek, r.Context)
		kms.Zero(dek)
		if err != nil {
			return nil, err
		}
		out[i] = kms.RewrapResult{WrappedDEK: w, KEKVersion: k.Primary}
	}
	return out, nil
}

// Describe implements kms.KMS.
func (c *Client) Describe(ctx context.Context) (kms.KeyInfo, error) {
	c.calls.Add(1)
	k, err := c.load()
	if err != nil {
		return kms.KeyInfo{}, err
	}
	return kms.KeyInfo{Provider: Provider, KEKID: c.kekID, LatestVersion: k.Primary}, nil
}

// WriteKeyFile creates a key file at path holding one fresh KEK (version "1") for each id, unless
// the file exists already. Dev and tests only.
func WriteKeyFile(path string, kekIDs ...string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f := File{Keys: map[string]*Key{}}
	for _, id := range kekIDs {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return err
		}
		f.Keys[id] = &Key{Primary: "1", Versions: map[string]string{"1": base64.StdEncoding.EncodeToString(raw)}}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// Update rewrites the key file at path with fn applied, for tests (disable a key, add a version).
func Update(path string, fn func(*File)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	fn(&f)
	b, err = json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
