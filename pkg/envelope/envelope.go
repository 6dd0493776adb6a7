// Package envelope is byok's versioned ciphertext record: the layout written to storage topics,
// its strict parser, and sealing/opening of message bodies with AES-256-GCM.
//
// The layout is specified field by field in schemas/envelope-v1.md. Every length is checked
// against the bytes present and against a cap before use; anything unknown (magic, version,
// algorithm, key-reference kind) is rejected rather than guessed at.
//
// This package knows nothing about KMSs or caches: it takes a ready cipher.AEAD built from a
// DEK, and a KeyRef that says how to find that DEK again (the wrapped DEK, inline).
package envelope

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/byok-io/byok/pkg/scope"
)

// Format constants of envelope v1.
const (
	Magic0, Magic1 = 'B', 'Y'

	Version1 byte = 1

	// AlgAES256GCM is AES-256-GCM with a 96-bit random nonce and a 128-bit tag.
	AlgAES256GCM byte = 1

	// KeyRefInline means the wrapped DEK is carried in the envelope itself.
	KeyRefInline byte = 1

	NonceSize = 12
	TagSize   = 16

	MaxProviderLen   = 32
	MaxKEKIDLen      = 1024
	MaxKEKVersionLen = 64
	MaxWrappedDEKLen = 4096
	// MaxBodyLen caps a message body (1 MiB), and so a ciphertext.
	MaxBodyLen = 1 << 20
)

// ErrMalformed is returned (wrapped) for any envelope that does not parse.
var ErrMalformed = errors.New("envelope: malformed")

// ErrUnsupported is returned (wrapped) for a well-formed envelope of a version, algorithm or
// key-reference kind this build does not know.
var ErrUnsupported = errors.New("envelope: unsupported")

// ErrOpen is returned when authentication fails: wrong DEK, or the envelope was moved to another
// tenant, chat, day or message, or was altered.
var ErrOpen = errors.New("envelope: authentication failed (wrong key, or envelope moved or altered)")

// KeyRef says which DEK sealed an envelope and how to get it back from the tenant's KMS.
type KeyRef struct {
	Provider   string // "vault", "yandex", "cloudru", "local"
	KEKID      string // the tenant's key id in its KMS
	KEKVersion string // KEK version that wrapped the DEK, as the KMS names it
	WrappedDEK []byte // the DEK encrypted by the KEK, bound to the scope's KMS context
}

// Envelope is a parsed envelope. Ciphertext includes the GCM tag.
type Envelope struct {
	Version    byte
	Algorithm  byte
	Scope      scope.Scope
	Key        KeyRef
	Nonce      [NonceSize]byte
	Ciphertext []byte
}

// AAD is the additional authenticated data of a v1 envelope:
// "byok.envelope.v1" ‖ alg ‖ u16 len ‖ tenant ‖ u16 len ‖ chat ‖ u32 day ‖ u16 len ‖ message id.
// The key reference is deliberately outside the AAD so that a KEK rotation can rewrap the DEK
// in place; the wrapped DEK is bound to the scope by the KMS itself.
func AAD(alg byte, s scope.Scope, messageID string) []byte {
	b := make([]byte, 0, 16+1+2+len(s.TenantID)+2+len(s.ChatID)+4+2+len(messageID))
	b = append(b, "byok.envelope.v1"...)
	b = append(b, alg)
	b = appendString16(b, s.TenantID)
	b = appendString16(b, s.ChatID)
	b = binary.BigEndian.AppendUint32(b, uint32(s.Day))
	return appendString16(b, messageID)
}

// MaxMessageIDLen caps the message id bound into the AAD.
const MaxMessageIDLen = 256

// Seal encrypts body for message messageID in scope s with aead (built from the scope's DEK)
// and returns the envelope bytes. A fresh random nonce is drawn for every call.
func Seal(aead cipher.AEAD, key KeyRef, s scope.Scope, messageID string, body []byte) ([]byte, error) {
	if err := checkSealArgs(aead, key, s, messageID, body); err != nil {
		return nil, err
	}
	e := Envelope{Version: Version1, Algorithm: AlgAES256GCM, Scope: s, Key: key}
	if _, err := rand.Read(e.Nonce[:]); err != nil {
		return nil, fmt.Errorf("envelope: nonce: %w", err)
	}
	out := e.appendHeader(make([]byte, 0, e.headerLen()+NonceSize+len(body)+TagSize))
	out = append(out, e.Nonce[:]...)
	return aead.Seal(out, e.Nonce[:], body, AAD(e.Algorithm, s, messageID)), nil
}

func checkSealArgs(aead cipher.AEAD, key KeyRef, s scope.Scope, messageID string, body []byte) error {
	if aead.NonceSize() != NonceSize || aead.Overhead() != TagSize {
		return errors.New("envelope: AEAD is not AES-GCM with a 96-bit nonce")
	}
	if err := s.Validate(); err != nil {
		return err
	}
	switch {
	case messageID == "" || len(messageID) > MaxMessageIDLen:
		return fmt.Errorf("envelope: message id must be 1..%d bytes", MaxMessageIDLen)
	case len(body) > MaxBodyLen:
		return fmt.Errorf("envelope: body of %d bytes exceeds %d", len(body), MaxBodyLen)
	case key.Provider == "" || len(key.Provider) > MaxProviderLen:
		return fmt.Errorf("envelope: provider must be 1..%d bytes", MaxProviderLen)
	case key.KEKID == "" || len(key.KEKID) > MaxKEKIDLen:
		return fmt.Errorf("envelope: KEK id must be 1..%d bytes", MaxKEKIDLen)
	case len(key.KEKVersion) > MaxKEKVersionLen:
		return fmt.Errorf("envelope: KEK version longer than %d bytes", MaxKEKVersionLen)
	case len(key.WrappedDEK) == 0 || len(key.WrappedDEK) > MaxWrappedDEKLen:
		return fmt.Errorf("envelope: wrapped DEK must be 1..%d bytes", MaxWrappedDEKLen)
	}
	return nil
}

// Open authenticates and decrypts e as the body of message messageID. The caller supplies the
// message id from the storage record; an envelope copied to another message fails here.
func Open(aead cipher.AEAD, e *Envelope, messageID string) ([]byte, error) {
	if e.Version != Version1 || e.Algorithm != AlgAES256GCM {
		return nil, fmt.Errorf("%w: version %d algorithm %d", ErrUnsupported, e.Version, e.Algorithm)
	}
	body, err := aead.Open(nil, e.Nonce[:], e.Ciphertext, AAD(e.Algorithm, e.Scope, messageID))
	if err != nil {
		return nil, ErrOpen
	}
	return body, nil
}

// Marshal returns the wire form of e.
func (e *Envelope) Marshal() []byte {
	out := e.appendHeader(make([]byte, 0, e.headerLen()+NonceSize+len(e.Ciphertext)))
	out = append(out, e.Nonce[:]...)
	return append(out, e.Ciphertext...)
}

func (e *Envelope) headerLen() int {
	return 2 + 1 + 1 + 1 +
		1 + len(e.Key.Provider) + 2 + len(e.Key.KEKID) + 1 + len(e.Key.KEKVersion) +
		2 + len(e.Scope.TenantID) + 2 + len(e.Scope.ChatID) + 4 +
		2 + len(e.Key.WrappedDEK)
}

func (e *Envelope) appendHeader(b []byte) []byte {
	b = append(b, Magic0, Magic1, e.Version, e.Algorithm, KeyRefInline)
	b = append(b, byte(len(e.Key.Provider)))
	b = append(b, e.Key.Provider...)
	b = appendString16(b, e.Key.KEKID)
	b = append(b, byte(len(e.Key.KEKVersion)))
	b = append(b, e.Key.KEKVersion...)
	b = appendString16(b, e.Scope.TenantID)
	b = appendString16(b, e.Scope.ChatID)
	b = binary.BigEndian.AppendUint32(b, uint32(e.Scope.Day))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Key.WrappedDEK)))
	return append(b, e.Key.WrappedDEK...)
}

func appendString16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// Parse parses an envelope strictly. The returned Envelope copies nothing: its byte slices
// alias b, so b must not be modified while the Envelope is in use.
func Parse(b []byte) (*Envelope, error) {
	r := reader{b: b}
	if m0, m1 := r.byte(), r.byte(); r.err == nil && (m0 != Magic0 || m1 != Magic1) {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	e := &Envelope{Version: r.byte(), Algorithm: r.byte()}
	kind := r.byte()
	if r.err != nil {
		return nil, r.err
	}
	if e.Version != Version1 {
		return nil, fmt.Errorf("%w: version %d", ErrUnsupported, e.Version)
	}
	if e.Algorithm != AlgAES256GCM {
		return nil, fmt.Errorf("%w: algorithm %d", ErrUnsupported, e.Algorithm)
	}
	if kind != KeyRefInline {
		return nil, fmt.Errorf("%w: key reference kind %d", ErrUnsupported, kind)
	}
	e.Key.Provider = string(r.bytes8(1, MaxProviderLen, "provider"))
	e.Key.KEKID = string(r.bytes16(1, MaxKEKIDLen, "KEK id"))
	e.Key.KEKVersion = string(r.bytes8(0, MaxKEKVersionLen, "KEK version"))
	e.Scope.TenantID = string(r.bytes16(1, scope.MaxTenantIDLen, "tenant id"))
	e.Scope.ChatID = string(r.bytes16(1, scope.MaxChatIDLen, "chat id"))
	e.Scope.Day = scope.Day(r.uint32())
	e.Key.WrappedDEK = r.bytes16(1, MaxWrappedDEKLen, "wrapped DEK")
	copy(e.Nonce[:], r.n(NonceSize, "nonce"))
	if r.err != nil {
		return nil, r.err
	}
	rest := b[r.off:]
	if len(rest) < TagSize || len(rest) > MaxBodyLen+TagSize {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes, want %d..%d", ErrMalformed, len(rest), TagSize, MaxBodyLen+TagSize)
	}
	e.Ciphertext = rest
	return e, nil
}

// reader is a bounds-checked cursor; after the first error every read returns zero values.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) n(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: truncated at %s (offset %d)", ErrMalformed, what, r.off)
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *reader) byte() byte {
	if s := r.n(1, "header"); s != nil {
		return s[0]
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if s := r.n(4, "day"); s != nil {
		return binary.BigEndian.Uint32(s)
	}
	return 0
}

func (r *reader) bytes8(lo, hi int, what string) []byte {
	l := r.n(1, what+" length")
	if l == nil {
		return nil
	}
	return r.checked(int(l[0]), lo, hi, what)
}

func (r *reader) bytes16(lo, hi int, what string) []byte {
	l := r.n(2, what+" length")
	if l == nil {
		return nil
	}
	return r.checked(int(binary.BigEndian.Uint16(l)), lo, hi, what)
}

func (r *reader) checked(n, lo, hi int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < lo || n > hi {
		r.err = fmt.Errorf("%w: %s length %d, want %d..%d", ErrMalformed, what, n, lo, hi)
		return nil
	}
	return r.n(n, what)
}
