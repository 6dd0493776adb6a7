// Package settings keeps tenants' KMS credentials secret at rest: the operator's settings key
// (32 random bytes in a file), sealing and opening a credential with it (AES-256-GCM, bound to
// the tenant), and turning a TenantSettings record from the settings topic into the tenant.Config
// the encrypt and read paths use.
//
// It holds no state and makes no KMS or Kafka calls: the settings service (services/settings)
// validates and publishes, pkg/control carries records between processes. Errors name tenants,
// providers and key ids, never a credential.
package settings

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/tenant"
)

// KeySize is the settings key's length: AES-256.
const KeySize = 32

// SchemaVersion is the TenantSettings layout this package reads and writes.
const SchemaVersion = 1

// sealVersion is the first byte of a sealed credential: the layout that follows is
// nonce (12 bytes) ‖ AES-256-GCM ciphertext and tag, with aad(tenant) as additional data.
const sealVersion byte = 1

// aadLabel names what a sealed blob is, so that a ciphertext of some other use of the same key
// (there is none today) could never pass for a credential.
const aadLabel = "byok settings credential v1"

// MaxCredentialLen caps a credential: a Yandex authorized key with its PEM private key is ~2.5
// KiB; 32 KiB leaves room without letting a record grow without bound.
const MaxCredentialLen = 32 << 10

// Errors. They wrap into messages that name the tenant and key id, never the credential.
var (
	// ErrKeyMismatch: the record was sealed with another settings key than this process holds.
	ErrKeyMismatch = errors.New("settings: sealed with another settings key")
	// ErrNotOpened: the sealed credential did not open — corrupted, or sealed for another tenant.
	ErrNotOpened = errors.New("settings: sealed credential does not open")
	// ErrInvalid: the record is malformed (unknown schema_version, missing fields).
	ErrInvalid = errors.New("settings: invalid record")
)

// Key is the operator's settings key. It is never printed: String and GoString give its id.
type Key struct {
	aead cipher.AEAD
	id   string
}

// NewKey returns the key for raw, which must be KeySize bytes. raw is not retained.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("settings: key must be %d bytes, got %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("settings: key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("settings: key: %w", err)
	}
	sum := sha256.Sum256(raw)
	return &Key{aead: aead, id: hex.EncodeToString(sum[:8])}, nil
}

// ID names the key in records (settings_key_id): the first 8 bytes of its SHA-256, in hex. It
// identifies the key without revealing anything usable about it.
func (k *Key) ID() string { return k.id }

// String implements fmt.Stringer without the key material.
func (k *Key) String() string { return "settings key " + k.id }

// GoString keeps %#v from printing the key material.
func (k *Key) GoString() string { return k.String() }

// LoadKey reads a settings key file: the key in standard base64, surrounding whitespace allowed.
// The error names the file and what is wrong, never the file's content.
func LoadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("settings: key file: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("settings: key file %s: not standard base64", path)
	}
	defer clear(raw)
	if len(raw) != KeySize {
		return nil, fmt.Errorf("settings: key file %s: holds %d bytes, want %d", path, len(raw), KeySize)
	}
	return NewKey(raw)
}

// GenerateKeyFile writes a new random settings key to path (mode 0600) and returns it. It refuses
// to overwrite an existing file: losing the key loses every stored credential.
func GenerateKeyFile(path string) (*Key, error) {
	raw := make([]byte, KeySize)
	defer clear(raw)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("settings: generate key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("settings: key file %s: %w", path, err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("settings: key file %s: write: %w", path, werr)
	}
	return NewKey(raw)
}

// aad binds a sealed credential to its layout version and tenant: moved to another tenant's
// record it does not open.
func aad(tenantID string) []byte {
	b := make([]byte, 0, len(aadLabel)+2+len(tenantID))
	b = append(b, aadLabel...)
	b = append(b, 0, sealVersion)
	return append(b, tenantID...)
}

// Seal encrypts credential for tenantID with key: version byte ‖ random nonce ‖ ciphertext.
func Seal(key *Key, tenantID string, credential []byte) ([]byte, error) {
	switch {
	case key == nil:
		return nil, errors.New("settings: seal: no settings key")
	case tenantID == "":
		return nil, errors.New("settings: seal: empty tenant id")
	case len(credential) == 0:
		return nil, fmt.Errorf("settings: seal: tenant %s: empty credential", tenantID)
	case len(credential) > MaxCredentialLen:
		return nil, fmt.Errorf("settings: seal: tenant %s: credential of %d bytes exceeds %d", tenantID, len(credential), MaxCredentialLen)
	}
	ns := key.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(credential)+key.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("settings: seal: nonce: %w", err)
	}
	return key.aead.Seal(out, out[1:1+ns], credential, aad(tenantID)), nil
}

// Open decrypts a credential Seal made for tenantID. The caller owns the result and should clear
// it when done.
func Open(key *Key, tenantID string, sealed []byte) ([]byte, error) {
	if key == nil {
		return nil, errors.New("settings: open: no settings key")
	}
	ns := key.aead.NonceSize()
	switch {
	case len(sealed) == 0:
		return nil, fmt.Errorf("%w: tenant %s: empty", ErrNotOpened, tenantID)
	case sealed[0] != sealVersion:
		return nil, fmt.Errorf("%w: tenant %s: unknown layout version %d", ErrNotOpened, tenantID, sealed[0])
	case len(sealed) < 1+ns+key.aead.Overhead():
		return nil, fmt.Errorf("%w: tenant %s: %d bytes is too short", ErrNotOpened, tenantID, len(sealed))
	}
	pt, err := key.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad(tenantID))
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %s with %s (corrupted, or sealed for another tenant)", ErrNotOpened, tenantID, key)
	}
	return pt, nil
}

// ToConfig turns a settings record into the tenant.Config the encrypt and read paths apply,
// opening the sealed credential with key. It checks the record defensively: an unknown
// schema_version, a missing tenant id, an enabled tenant without provider, KEK id or credential,
// or a credential sealed with another settings key is an error (wrapping ErrInvalid,
// ErrKeyMismatch or ErrNotOpened) and the record must not be applied. A disabled tenant's
// credential is not opened: switching byok off must work whatever state the credential is in.
func ToConfig(ts *byokv1.TenantSettings, key *Key) (tenant.Config, error) {
	if ts == nil {
		return tenant.Config{}, fmt.Errorf("%w: empty record", ErrInvalid)
	}
	if ts.TenantId == "" {
		return tenant.Config{}, fmt.Errorf("%w: tenant_id is empty", ErrInvalid)
	}
	if ts.SchemaVersion != SchemaVersion {
		return tenant.Config{}, fmt.Errorf("%w: tenant %s: schema_version %d is not supported (want %d)", ErrInvalid, ts.TenantId, ts.SchemaVersion, SchemaVersion)
	}
	c := tenant.Config{Enabled: ts.Enabled, Provider: ts.Provider, KEKID: ts.KekId, Revision: ts.Revision}
	if !ts.Enabled {
		return c, nil
	}
	switch {
	case ts.Provider == "" || ts.KekId == "":
		return tenant.Config{}, fmt.Errorf("%w: tenant %s: enabled without provider and kek_id", ErrInvalid, ts.TenantId)
	case len(ts.SealedCredential) == 0:
		return tenant.Config{}, fmt.Errorf("%w: tenant %s: enabled without a credential", ErrInvalid, ts.TenantId)
	case key == nil:
		return tenant.Config{}, fmt.Errorf("settings: tenant %s: no settings key to open the credential with", ts.TenantId)
	case ts.SettingsKeyId != key.ID():
		return tenant.Config{}, fmt.Errorf("%w: tenant %s: credential sealed with settings key %q, this process holds %q",
			ErrKeyMismatch, ts.TenantId, ts.SettingsKeyId, key.ID())
	}
	cred, err := Open(key, ts.TenantId, ts.SealedCredential)
	if err != nil {
		return tenant.Config{}, err
	}
	c.Credential = cred
	return c, nil
}
