// Package cloudruemu is an in-process emulator of the parts of Cloud.ru's public REST API that the
// cloudru KMS provider uses: the IAM token exchange and the Key Management Service's symmetric
// encrypt, decrypt and key read calls. It exists for tests (of kms/cloudru and of anything built
// on it); it is not a KMS and must never hold real keys.
//
// What it serves, on one listener at 127.0.0.1 (so the same URL is both the IAM and the KMS
// endpoint):
//
//	POST /api/v1/auth/token              {"keyId","secret"} → {"access_token","expires_in","token_type",…}
//	POST /v1/encrypt                     {"keyId","keyVersionId"?,"plaintext","aad"?} → {"keyId","keyVersionId","ciphertext"}
//	POST /v1/decrypt                     {"keyId","ciphertext","aad"?} → {"keyId","keyVersionId","plaintext"}
//	GET  /v1/keys/{keyId}                key metadata
//	GET  /v1/keys/{keyId}/versions       {"versions":[{"id":<integer>,…}]}
//
// Errors are JSON {"code": <gRPC code>, "message": "…", "details": []} — the shape a gRPC-gateway
// service answers with. Which of these shapes are confirmed by Cloud.ru's public documentation and
// which are assumed is listed in the package comment of kms/cloudru; this emulator follows the
// same choices, so a mismatch with the real service must be fixed in both.
//
// Cryptography is real: each key version holds a random AES-256 key; ciphertexts are
// base64(format ‖ u32 version ‖ nonce ‖ AES-GCM(plaintext, aad)), so they name their version and
// decrypt needs no version id. AAD is enforced. Keys can be disabled, rotated, and granted to or
// revoked from service-account access keys; tokens expire; latency and unavailability (503) can
// be injected; call counters and the largest number of KMS calls in flight at once are kept.
package cloudruemu

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Size limits the emulator enforces (400 INVALID_ARGUMENT beyond them). They mirror the limits
// kms/cloudru assumes; Cloud.ru does not publish its own.
const (
	MaxPlaintext = 32 << 10
	MaxAAD       = 8 << 10
)

// gRPC status codes used in error bodies.
const (
	codeInvalidArgument    = 3
	codeNotFound           = 5
	codePermissionDenied   = 7
	codeFailedPrecondition = 9
	codeUnavailable        = 14
	codeUnauthenticated    = 16
)

const ciphertextFormat = 1

// Stats counts the calls the emulator answered (any status) and the most KMS calls
// (encrypt/decrypt/key reads) that were in progress at the same time.
type Stats struct {
	TokenCalls   int
	EncryptCalls int
	DecryptCalls int
	KeyCalls     int
	MaxInFlight  int
}

type version struct {
	id   int
	aead cipher.AEAD
}

type key struct {
	id       string
	disabled bool
	primary  int
	versions map[int]*version
	created  time.Time
}

type token struct {
	accessKeyID string
	expires     time.Time
}

// Server is a running emulator. All methods are safe for concurrent use.
type Server struct {
	srv *http.Server
	ln  net.Listener
	url string

	mu          sync.Mutex
	secrets     map[string]string          // access key id → secret
	keys        map[string]*key            // KMS key id → key
	grants      map[string]map[string]bool // access key id → KMS key ids it may use
	tokens      map[string]token
	tokenTTL    time.Duration
	latency     time.Duration
	unavailable bool
	stats       Stats
	inFlight    int
}

// New starts an emulator on 127.0.0.1 at a free port. Close it when done.
func New() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cloudruemu: listen: %w", err)
	}
	s := &Server{
		ln:       ln,
		url:      "http://" + ln.Addr().String(),
		secrets:  map[string]string{},
		keys:     map[string]*key{},
		grants:   map[string]map[string]bool{},
		tokens:   map[string]token{},
		tokenTTL: time.Hour,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/token", s.handleToken)
	mux.HandleFunc("POST /v1/encrypt", s.kmsCall(s.handleEncrypt))
	mux.HandleFunc("POST /v1/decrypt", s.kmsCall(s.handleDecrypt))
	mux.HandleFunc("GET /v1/keys/{keyId}", s.kmsCall(s.handleGetKey))
	mux.HandleFunc("GET /v1/keys/{keyId}/versions", s.kmsCall(s.handleListVersions))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the base URL of both the IAM and the KMS endpoint, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.url }

// Close stops the emulator at once: open connections are cut, later calls are refused.
func (s *Server) Close() error { return s.srv.Close() }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NewAccessKey registers a service account access key and returns its key id and secret, as the
// Cloud.ru console would show them once.
func (s *Server) NewAccessKey() (keyID, secret string) {
	keyID, secret = "sa-"+randomHex(8), randomHex(24)
	s.mu.Lock()
	s.secrets[keyID] = secret
	s.mu.Unlock()
	return keyID, secret
}

func newVersion(id int) *version {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		panic(err)
	}
	block, err := aes.NewCipher(raw)
	clear(raw)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &version{id: id, aead: aead}
}

// CreateKey creates an active symmetric key with version 1 as primary and returns its id.
func (s *Server) CreateKey() string {
	id := "kek-" + randomHex(8)
	s.mu.Lock()
	s.keys[id] = &key{id: id, primary: 1, versions: map[int]*version{1: newVersion(1)}, created: time.Now().UTC()}
	s.mu.Unlock()
	return id
}

// RotateKey adds a new version to key keyID, makes it primary and returns its id. Older versions
// still decrypt. It panics on an unknown key (a test bug).
func (s *Server) RotateKey(keyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.mustKey(keyID)
	next := k.primary
	for id := range k.versions {
		next = max(next, id)
	}
	next++
	k.versions[next] = newVersion(next)
	k.primary = next
	return next
}

// SetKeyDisabled disables (or re-enables) key keyID: a disabled key neither encrypts nor
// decrypts.
func (s *Server) SetKeyDisabled(keyID string, disabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustKey(keyID).disabled = disabled
}

func (s *Server) mustKey(keyID string) *key {
	k, ok := s.keys[keyID]
	if !ok {
		panic("cloudruemu: no key " + keyID)
	}
	return k
}

// Grant allows the service account of access key accessKeyID to use KMS key keyID.
func (s *Server) Grant(accessKeyID, keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grants[accessKeyID] == nil {
		s.grants[accessKeyID] = map[string]bool{}
	}
	s.grants[accessKeyID][keyID] = true
}

// Revoke takes back a Grant. Tokens already issued lose the permission at once.
func (s *Server) Revoke(accessKeyID, keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.grants[accessKeyID], keyID)
}

// SetTokenTTL sets the lifetime of tokens issued from now on (default one hour; Cloud.ru's
// documented example answers expires_in 3600).
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	s.tokenTTL = d
	s.mu.Unlock()
}

// ExpireTokens makes every token issued so far invalid, as if they had all expired early: the
// next KMS call with one gets 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	clear(s.tokens)
	s.mu.Unlock()
}

// SetLatency delays every answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetUnavailable makes every endpoint (IAM included) answer 503 while on.
func (s *Server) SetUnavailable(on bool) {
	s.mu.Lock()
	s.unavailable = on
	s.mu.Unlock()
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ResetStats zeroes the counters.
func (s *Server) ResetStats() {
	s.mu.Lock()
	s.stats = Stats{}
	s.mu.Unlock()
}

// --- HTTP plumbing ---

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"code": code, "message": msg, "details": []any{}})
}

// admit applies injected latency and unavailability; it reports false when it already answered.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	lat, down := s.latency, s.unavailable
	s.mu.Unlock()
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-r.Context().Done():
			return false
		}
	}
	if down {
		writeErr(w, http.StatusServiceUnavailable, codeUnavailable, "service unavailable")
		return false
	}
	return true
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, "request body is not valid JSON for this call")
		return false
	}
	return true
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.TokenCalls++
	s.mu.Unlock()
	if !s.admit(w, r) {
		return
	}
	var req struct {
		KeyID  string `json:"keyId"`
		Secret string `json:"secret"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	s.mu.Lock()
	want, ok := s.secrets[req.KeyID]
	ttl := s.tokenTTL
	var tok string
	if ok && subtle.ConstantTimeCompare([]byte(want), []byte(req.Secret)) == 1 {
		tok = randomHex(32)
		s.tokens[tok] = token{accessKeyID: req.KeyID, expires: time.Now().Add(ttl)}
	}
	s.mu.Unlock()
	if tok == "" {
		writeErr(w, http.StatusUnauthorized, codeUnauthenticated, "invalid key id or secret")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":       tok,
		"id_token":           "",
		"refresh_token":      "",
		"expires_in":         int(ttl.Round(time.Second) / time.Second),
		"refresh_expires_in": 0,
		"scopes":             []string{"openid profile email roles"},
		"token_type":         "Bearer",
		"not_before":         0,
	})
}

// kmsCall wraps a KMS handler: latency, unavailability, in-flight accounting and the bearer
// token check. The handler gets the caller's access key id.
func (s *Server) kmsCall(h func(w http.ResponseWriter, r *http.Request, accessKeyID string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.inFlight++
		s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.inFlight)
		switch {
		case r.URL.Path == "/v1/encrypt":
			s.stats.EncryptCalls++
		case r.URL.Path == "/v1/decrypt":
			s.stats.DecryptCalls++
		default:
			s.stats.KeyCalls++
		}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
		}()
		if !s.admit(w, r) {
			return
		}
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		t, known := s.tokens[bearer]
		s.mu.Unlock()
		if !ok || !known || time.Now().After(t.expires) {
			writeErr(w, http.StatusUnauthorized, codeUnauthenticated, "missing, invalid or expired token")
			return
		}
		h(w, r, t.accessKeyID)
	}
}

// useKey looks a key up and checks the caller may use it, answering the error itself.
// Order: unknown key → 404, no permission → 403, disabled → 400 FAILED_PRECONDITION.
func (s *Server) useKey(w http.ResponseWriter, keyID, accessKeyID string, needEnabled bool) (*key, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[keyID]
	switch {
	case !ok:
		writeErr(w, http.StatusNotFound, codeNotFound, "key not found")
		return nil, false
	case !s.grants[accessKeyID][keyID]:
		writeErr(w, http.StatusForbidden, codePermissionDenied, "permission denied")
		return nil, false
	case needEnabled && k.disabled:
		writeErr(w, http.StatusBadRequest, codeFailedPrecondition, "key is disabled")
		return nil, false
	}
	return k, true
}

// versionRef accepts a key version id as a JSON string or number.
type versionRef string

func (v *versionRef) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = versionRef(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*v = versionRef(n.String())
	return nil
}

func (s *Server) handleEncrypt(w http.ResponseWriter, r *http.Request, accessKeyID string) {
	var req struct {
		KeyID        string     `json:"keyId"`
		KeyVersionID versionRef `json:"keyVersionId"`
		Plaintext    []byte     `json:"plaintext"`
		AAD          []byte     `json:"aad"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	defer clear(req.Plaintext)
	switch {
	case req.KeyID == "":
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, "keyId is required")
		return
	case len(req.Plaintext) == 0 || len(req.Plaintext) > MaxPlaintext:
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, "plaintext must be 1.."+strconv.Itoa(MaxPlaintext)+" bytes")
		return
	case len(req.AAD) > MaxAAD:
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, "aad must be at most "+strconv.Itoa(MaxAAD)+" bytes")
		return
	}
	k, ok := s.useKey(w, req.KeyID, accessKeyID, true)
	if !ok {
		return
	}
	s.mu.Lock()
	vid := k.primary
	if req.KeyVersionID != "" {
		n, err := strconv.Atoi(string(req.KeyVersionID))
		if err != nil || k.versions[n] == nil {
			s.mu.Unlock()
			writeErr(w, http.StatusNotFound, codeNotFound, "key version not found")
			return
		}
		vid = n
	}
	v := k.versions[vid]
	s.mu.Unlock()

	ct := make([]byte, 1+4+12, 1+4+12+len(req.Plaintext)+16)
	ct[0] = ciphertextFormat
	binary.BigEndian.PutUint32(ct[1:5], uint32(v.id))
	if _, err := rand.Read(ct[5:17]); err != nil {
		writeErr(w, http.StatusInternalServerError, 13, "rng failure")
		return
	}
	ct = v.aead.Seal(ct, ct[5:17], req.Plaintext, req.AAD)
	writeJSON(w, http.StatusOK, map[string]any{
		"keyId":        k.id,
		"keyVersionId": strconv.Itoa(v.id),
		"ciphertext":   base64.StdEncoding.EncodeToString(ct),
	})
}

func (s *Server) handleDecrypt(w http.ResponseWriter, r *http.Request, accessKeyID string) {
	var req struct {
		KeyID      string `json:"keyId"`
		Ciphertext string `json:"ciphertext"`
		AAD        []byte `json:"aad"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.KeyID == "" || req.Ciphertext == "" || len(req.AAD) > MaxAAD {
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, "keyId and ciphertext are required; aad at most "+strconv.Itoa(MaxAAD)+" bytes")
		return
	}
	k, ok := s.useKey(w, req.KeyID, accessKeyID, true)
	if !ok {
		return
	}
	const bad = "ciphertext is malformed, or was made with another key or aad"
	ct, err := base64.StdEncoding.DecodeString(req.Ciphertext)
	if err != nil || len(ct) < 1+4+12+16 || ct[0] != ciphertextFormat {
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, bad)
		return
	}
	vid := int(binary.BigEndian.Uint32(ct[1:5]))
	s.mu.Lock()
	v := k.versions[vid]
	s.mu.Unlock()
	if v == nil {
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, bad)
		return
	}
	pt, err := v.aead.Open(nil, ct[5:17], ct[17:], req.AAD)
	if err != nil {
		writeErr(w, http.StatusBadRequest, codeInvalidArgument, bad)
		return
	}
	defer clear(pt)
	writeJSON(w, http.StatusOK, map[string]any{
		"keyId":        k.id,
		"keyVersionId": strconv.Itoa(v.id),
		"plaintext":    pt, // encoding/json writes []byte as base64
	})
}

func (s *Server) handleGetKey(w http.ResponseWriter, r *http.Request, accessKeyID string) {
	k, ok := s.useKey(w, r.PathValue("keyId"), accessKeyID, false)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	state := "ACTIVE"
	if k.disabled {
		state = "DISABLED"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":               k.id,
		"name":             k.id,
		"description":      "cloudruemu key",
		"createdAt":        k.created.Format(time.RFC3339),
		"defaultAlgorithm": "AES_256",
		"state":            state,
		"primaryVersionId": k.primary,
	})
}

func (s *Server) handleListVersions(w http.ResponseWriter, r *http.Request, accessKeyID string) {
	k, ok := s.useKey(w, r.PathValue("keyId"), accessKeyID, false)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	versions := make([]map[string]any, 0, len(k.versions))
	for id := 1; len(versions) < len(k.versions); id++ {
		if _, ok := k.versions[id]; !ok {
			continue
		}
		versions = append(versions, map[string]any{
			"id":        id, // an integer, as the published version reference says
			"keyId":     k.id,
			"algorithm": "AES_256",
			"createdAt": k.created.Format(time.RFC3339),
			"primary":   id == k.primary,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": versions})
}
