// Package yandexemu is an in-process emulator of the Yandex Cloud APIs that byok's Yandex KMS
// provider calls, for tests: a gRPC server on 127.0.0.1 (plaintext) serving the published
// services from go-genproto, so that the real Yandex Go SDK talks to it unchanged.
//
// It implements:
//   - yandex.cloud.iam.v1.IamTokenService/Create with a JWT: the signature is verified (PS256)
//     with the public key registered under the JWT's "kid", "iss" must be that key's service
//     account, "aud" must be Audience, "exp" must be present, in the future and at most an hour
//     away. It issues an opaque IAM token (12 h by default).
//   - yandex.cloud.kms.v1.SymmetricCryptoService Encrypt, Decrypt, ReEncrypt, GenerateDataKey
//     with real AES-256-GCM per key version, aad_context bound, Yandex's size limits enforced;
//     every call needs "authorization: Bearer <IAM token>", the caller's permission on the key
//     (else PermissionDenied) and an active key (else FailedPrecondition). Unknown keys are
//     NotFound; bad ciphertext or a wrong aad_context is InvalidArgument.
//   - yandex.cloud.kms.v1.SymmetricKeyService/Get (same permission; any key state).
//   - yandex.cloud.endpoint.ApiEndpointService List and Get (endpoint discovery: every service
//     at this server's address), although byok's provider, given an endpoint, never asks.
//
// Test controls: CreateKey, RotateKey, SetKeyState, NewAuthorizedKey (a fresh RSA-2048
// authorized key JSON for a service account), Grant, Revoke, SetLatency, SetUnavailable, Stop,
// and counters (Calls, MaxInFlight). It is not a KMS: keys live in memory and nothing is audited.
package yandexemu

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	endpointpb "github.com/yandex-cloud/go-genproto/yandex/cloud/endpoint"
	iampb "github.com/yandex-cloud/go-genproto/yandex/cloud/iam/v1"
	kmspb "github.com/yandex-cloud/go-genproto/yandex/cloud/kms/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Audience is the "aud" Yandex IAM expects in a service account JWT (and the SDK sends).
const Audience = "https://iam.api.cloud.yandex.net/iam/v1/tokens"

// Yandex KMS limits, enforced like the real service does.
const (
	MaxPlaintext  = 32 << 10
	MaxAADContext = 8 << 10
)

// KeyState is a symmetric key's state as the emulator models it.
type KeyState int

const (
	// KeyActive keys encrypt and decrypt.
	KeyActive KeyState = iota
	// KeyInactive keys answer FailedPrecondition to crypto calls (Yandex: status INACTIVE).
	KeyInactive
)

const cryptoService = "/yandex.cloud.kms.v1.SymmetricCryptoService/"

type key struct {
	id       string
	state    KeyState
	versions map[string]cipher.AEAD
	primary  string
	grants   map[string]bool // service account id → may use the key
}

type publicKey struct {
	serviceAccountID string
	key              *rsa.PublicKey
}

type issued struct {
	serviceAccountID string
	expires          time.Time
}

// Server is one emulator instance. Its methods are safe for concurrent use.
type Server struct {
	srv  *grpc.Server
	addr string

	mu          sync.Mutex
	keys        map[string]*key
	publicKeys  map[string]publicKey // authorized key id → owner and public key
	tokens      map[string]issued
	tokenTTL    time.Duration
	latency     time.Duration
	unavailable bool
	stopped     bool
	closed      bool
	parking     net.Listener // holds the port after Stop so no other server takes it
	calls       map[string]int64

	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

// New starts an emulator on 127.0.0.1 with a free port. Close it when done.
func New() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("yandexemu: listen: %w", err)
	}
	s := &Server{
		addr:       lis.Addr().String(),
		keys:       map[string]*key{},
		publicKeys: map[string]publicKey{},
		tokens:     map[string]issued{},
		tokenTTL:   12 * time.Hour,
		calls:      map[string]int64{},
	}
	s.srv = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.intercept),
		// The SDK pings idle connections every 30 s; Yandex's servers allow it, so does this one.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	iampb.RegisterIamTokenServiceServer(s.srv, iamService{s: s})
	kmspb.RegisterSymmetricCryptoServiceServer(s.srv, cryptoServer{s: s})
	kmspb.RegisterSymmetricKeyServiceServer(s.srv, keyServer{s: s})
	endpointpb.RegisterApiEndpointServiceServer(s.srv, endpointServer{s: s})
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// Start is New for tests: it fails tb on error and closes the server at cleanup.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Addr is the host:port to use as the credential's endpoint (plaintext gRPC).
func (s *Server) Addr() string { return s.addr }

// Stop stops serving, as a dead KMS: connections are refused (reset) from now on. The port
// stays reserved, so that no other test server starts listening there, until Close.
func (s *Server) Stop() { s.stop(true) }

// Close stops the server and releases its port. Safe to call more than once.
func (s *Server) Close() {
	s.stop(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.parking != nil {
		_ = s.parking.Close()
		s.parking = nil
	}
}

func (s *Server) stop(park bool) {
	s.mu.Lock()
	if s.stopped || s.closed {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.srv.Stop()
	if !park {
		return
	}
	// Hold the port with a listener that closes every connection at once: the client sees a
	// reset connection (Unavailable), as with a crashed KMS behind a load balancer.
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = lis.Close()
		return
	}
	s.parking = lis
	s.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

// CreateKey creates an active symmetric key with the given version ids (each a fresh AES-256
// key); the last one is primary. With no version ids it gets one, "<id>-v1".
func (s *Server) CreateKey(id string, versionIDs ...string) error {
	if id == "" {
		return errors.New("yandexemu: key id is required")
	}
	if len(versionIDs) == 0 {
		versionIDs = []string{id + "-v1"}
	}
	k := &key{id: id, versions: map[string]cipher.AEAD{}, grants: map[string]bool{}}
	for _, v := range versionIDs {
		if err := k.addVersion(v); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[id]; ok {
		return fmt.Errorf("yandexemu: key %s already exists", id)
	}
	s.keys[id] = k
	return nil
}

func (k *key) addVersion(v string) error {
	if v == "" || len(v) > 255 {
		return errors.New("yandexemu: version id must be 1-255 bytes")
	}
	if _, ok := k.versions[v]; ok {
		return fmt.Errorf("yandexemu: key %s already has version %s", k.id, v)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	k.versions[v] = aead
	k.primary = v
	return nil
}

// RotateKey adds a new primary version to key id and returns its id. Older versions still
// decrypt.
func (s *Server) RotateKey(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return "", fmt.Errorf("yandexemu: no key %s", id)
	}
	v := fmt.Sprintf("%s-v%d", id, len(k.versions)+1)
	if err := k.addVersion(v); err != nil {
		return "", err
	}
	return v, nil
}

// SetKeyState activates or deactivates key id. Unlike Yandex, where this takes up to hours to
// propagate, it takes effect at once.
func (s *Server) SetKeyState(id string, state KeyState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return fmt.Errorf("yandexemu: no key %s", id)
	}
	k.state = state
	return nil
}

// Grant lets service account serviceAccountID use key keyID (Yandex: the
// kms.keys.encrypterDecrypter role on the key).
func (s *Server) Grant(serviceAccountID, keyID string) error {
	return s.setGrant(serviceAccountID, keyID, true)
}

// Revoke takes that permission away; the next call answers PermissionDenied.
func (s *Server) Revoke(serviceAccountID, keyID string) error {
	return s.setGrant(serviceAccountID, keyID, false)
}

func (s *Server) setGrant(serviceAccountID, keyID string, allowed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[keyID]
	if !ok {
		return fmt.Errorf("yandexemu: no key %s", keyID)
	}
	if allowed {
		k.grants[serviceAccountID] = true
	} else {
		delete(k.grants, serviceAccountID)
	}
	return nil
}

// NewAuthorizedKey creates an RSA-2048 authorized key for service account serviceAccountID,
// registers its public key, and returns the key JSON as Yandex issues it (private key included).
func (s *Server) NewAuthorizedKey(serviceAccountID string) ([]byte, error) {
	if serviceAccountID == "" {
		return nil, errors.New("yandexemu: service account id is required")
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 10)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	keyID := "ajk" + hex.EncodeToString(id)
	s.RegisterPublicKey(keyID, serviceAccountID, &priv.PublicKey)
	return AuthorizedKeyJSON(keyID, serviceAccountID, priv)
}

// RegisterPublicKey registers pub as authorized key keyID of service account serviceAccountID,
// replacing any earlier key of that id.
func (s *Server) RegisterPublicKey(keyID, serviceAccountID string, pub *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publicKeys[keyID] = publicKey{serviceAccountID: serviceAccountID, key: pub}
}

// AuthorizedKeyJSON renders an authorized key JSON in Yandex's format (including the preamble
// line Yandex puts before the PEM block) without registering anything: useful to forge a key.
func AuthorizedKeyJSON(keyID, serviceAccountID string, priv *rsa.PrivateKey) ([]byte, error) {
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(map[string]string{
		"id":                 keyID,
		"service_account_id": serviceAccountID,
		"created_at":         time.Now().UTC().Format(time.RFC3339Nano),
		"key_algorithm":      "RSA_2048",
		"public_key":         string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})),
		"private_key": "PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <" + keyID + ">\n" +
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
	}, "", "  ")
}

// SetTokenTTL sets the lifetime of IAM tokens issued from now on (default 12 h).
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// SetLatency delays every call by d (honouring the caller's deadline).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetUnavailable makes every call (IAM included) answer codes.Unavailable while on.
func (s *Server) SetUnavailable(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailable = on
}

// Calls reports how many calls of fullMethod (e.g. kmspb.SymmetricCryptoService_Encrypt_FullMethodName)
// reached the server; with fullMethod "" it reports all calls.
func (s *Server) Calls(fullMethod string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fullMethod != "" {
		return s.calls[fullMethod]
	}
	var n int64
	for _, c := range s.calls {
		n += c
	}
	return n
}

// MaxInFlight reports the most SymmetricCryptoService calls that were in flight at once.
func (s *Server) MaxInFlight() int64 { return s.maxInFlight.Load() }

// ResetCounters zeroes Calls and MaxInFlight.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int64{}
	s.maxInFlight.Store(0)
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	s.calls[info.FullMethod]++
	latency, unavailable := s.latency, s.unavailable
	s.mu.Unlock()
	if strings.HasPrefix(info.FullMethod, cryptoService) {
		n := s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		for {
			m := s.maxInFlight.Load()
			if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if unavailable {
		return nil, status.Error(codes.Unavailable, "yandexemu: service unavailable (injected)")
	}
	return handler(ctx, req)
}

// caller returns the service account whose IAM token authorizes this call.
func (s *Server) caller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
		return "", status.Error(codes.Unauthenticated, "yandexemu: missing authorization: Bearer <IAM token>")
	}
	tok := strings.TrimPrefix(vals[0], "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	iss, ok := s.tokens[tok]
	if !ok || time.Now().After(iss.expires) {
		return "", status.Error(codes.Unauthenticated, "yandexemu: IAM token is invalid or expired")
	}
	return iss.serviceAccountID, nil
}

type access int

const (
	metadataAccess access = iota // SymmetricKeyService/Get: any state
	cryptoAccess                 // crypto calls: key must be active
)

// useKey authorizes the caller on keyID and returns the key (whose fields are read under s.mu).
func (s *Server) useKey(ctx context.Context, keyID string, a access) (*key, error) {
	sa, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[keyID]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "yandexemu: symmetric key %s not found", keyID)
	}
	if !k.grants[sa] {
		return nil, status.Errorf(codes.PermissionDenied, "yandexemu: service account %s has no permission on key %s", sa, keyID)
	}
	if a == cryptoAccess && k.state != KeyActive {
		return nil, status.Errorf(codes.FailedPrecondition, "yandexemu: key %s is not active", keyID)
	}
	return k, nil
}

// seal and open under one key version. Ciphertext layout (emulator-specific; Yandex's is
// opaque too): u8 len(version) ‖ version ‖ 12-byte nonce ‖ AES-256-GCM(plaintext). The GCM AAD is
// u16 len(key id) ‖ key id ‖ aad_context, so a ciphertext does not open under another key.
func (s *Server) seal(k *key, versionID string, plaintext, aad []byte) ([]byte, string, error) {
	s.mu.Lock()
	if versionID == "" {
		versionID = k.primary
	}
	aead, ok := k.versions[versionID]
	s.mu.Unlock()
	if !ok {
		return nil, "", status.Errorf(codes.InvalidArgument, "yandexemu: key %s has no version %s", k.id, versionID)
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", status.Error(codes.Internal, "yandexemu: no randomness")
	}
	out := append([]byte{byte(len(versionID))}, versionID...)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, gcmAAD(k.id, aad)), versionID, nil
}

func (s *Server) open(k *key, ciphertext, aad []byte) ([]byte, string, error) {
	bad := status.Error(codes.InvalidArgument, "yandexemu: invalid ciphertext or aad_context")
	if len(ciphertext) < 1 {
		return nil, "", bad
	}
	n := int(ciphertext[0])
	if len(ciphertext) < 1+n {
		return nil, "", bad
	}
	versionID := string(ciphertext[1 : 1+n])
	s.mu.Lock()
	aead, ok := k.versions[versionID]
	s.mu.Unlock()
	rest := ciphertext[1+n:]
	if !ok || len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, "", bad
	}
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], gcmAAD(k.id, aad))
	if err != nil {
		return nil, "", bad
	}
	return pt, versionID, nil
}

func gcmAAD(keyID string, aad []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(keyID)))
	b = append(b, keyID...)
	return append(b, aad...)
}

func checkLimits(plaintext, aad []byte) error {
	if len(plaintext) > MaxPlaintext {
		return status.Errorf(codes.InvalidArgument, "yandexemu: plaintext of %d bytes exceeds %d", len(plaintext), MaxPlaintext)
	}
	if len(aad) > MaxAADContext {
		return status.Errorf(codes.InvalidArgument, "yandexemu: aad_context of %d bytes exceeds %d", len(aad), MaxAADContext)
	}
	return nil
}

// iamService is IamTokenService.
type iamService struct {
	iampb.UnimplementedIamTokenServiceServer
	s *Server
}

func (i iamService) Create(_ context.Context, req *iampb.CreateIamTokenRequest) (*iampb.CreateIamTokenResponse, error) {
	s := i.s
	raw := req.GetJwt()
	if raw == "" {
		return nil, status.Error(codes.InvalidArgument, "yandexemu: only the jwt identity is supported")
	}
	var owner publicKey
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"PS256"})).ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		s.mu.Lock()
		pk, ok := s.publicKeys[kid]
		s.mu.Unlock()
		if !ok {
			return nil, errors.New("unknown key id")
		}
		owner = pk
		return pk.key, nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "yandexemu: JWT rejected: %v", err)
	}
	now := time.Now()
	switch {
	case claims.Issuer != owner.serviceAccountID:
		return nil, status.Error(codes.Unauthenticated, "yandexemu: JWT iss is not the key's service account")
	case !claims.VerifyAudience(Audience, true):
		return nil, status.Error(codes.Unauthenticated, "yandexemu: JWT aud is not "+Audience)
	case claims.ExpiresAt == nil:
		return nil, status.Error(codes.Unauthenticated, "yandexemu: JWT has no exp")
	case claims.ExpiresAt.Sub(now) > time.Hour+time.Minute:
		return nil, status.Error(codes.Unauthenticated, "yandexemu: JWT lifetime exceeds one hour")
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, status.Error(codes.Internal, "yandexemu: no randomness")
	}
	token := "t1.emu." + base64.RawURLEncoding.EncodeToString(tok)
	s.mu.Lock()
	expires := now.Add(s.tokenTTL)
	s.tokens[token] = issued{serviceAccountID: owner.serviceAccountID, expires: expires}
	s.mu.Unlock()
	return &iampb.CreateIamTokenResponse{IamToken: token, ExpiresAt: timestamppb.New(expires)}, nil
}

// cryptoServer is SymmetricCryptoService.
type cryptoServer struct {
	kmspb.UnimplementedSymmetricCryptoServiceServer
	s *Server
}

func (c cryptoServer) Encrypt(ctx context.Context, req *kmspb.SymmetricEncryptRequest) (*kmspb.SymmetricEncryptResponse, error) {
	if err := checkLimits(req.GetPlaintext(), req.GetAadContext()); err != nil {
		return nil, err
	}
	k, err := c.s.useKey(ctx, req.GetKeyId(), cryptoAccess)
	if err != nil {
		return nil, err
	}
	ct, v, err := c.s.seal(k, req.GetVersionId(), req.GetPlaintext(), req.GetAadContext())
	if err != nil {
		return nil, err
	}
	return &kmspb.SymmetricEncryptResponse{KeyId: k.id, VersionId: v, Ciphertext: ct}, nil
}

func (c cryptoServer) Decrypt(ctx context.Context, req *kmspb.SymmetricDecryptRequest) (*kmspb.SymmetricDecryptResponse, error) {
	if err := checkLimits(nil, req.GetAadContext()); err != nil {
		return nil, err
	}
	k, err := c.s.useKey(ctx, req.GetKeyId(), cryptoAccess)
	if err != nil {
		return nil, err
	}
	pt, v, err := c.s.open(k, req.GetCiphertext(), req.GetAadContext())
	if err != nil {
		return nil, err
	}
	return &kmspb.SymmetricDecryptResponse{KeyId: k.id, VersionId: v, Plaintext: pt}, nil
}

func (c cryptoServer) ReEncrypt(ctx context.Context, req *kmspb.SymmetricReEncryptRequest) (*kmspb.SymmetricReEncryptResponse, error) {
	if err := checkLimits(nil, req.GetAadContext()); err != nil {
		return nil, err
	}
	if err := checkLimits(nil, req.GetSourceAadContext()); err != nil {
		return nil, err
	}
	src, err := c.s.useKey(ctx, req.GetSourceKeyId(), cryptoAccess)
	if err != nil {
		return nil, err
	}
	dst, err := c.s.useKey(ctx, req.GetKeyId(), cryptoAccess)
	if err != nil {
		return nil, err
	}
	pt, srcVersion, err := c.s.open(src, req.GetCiphertext(), req.GetSourceAadContext())
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	ct, v, err := c.s.seal(dst, req.GetVersionId(), pt, req.GetAadContext())
	if err != nil {
		return nil, err
	}
	return &kmspb.SymmetricReEncryptResponse{KeyId: dst.id, VersionId: v, SourceKeyId: src.id, SourceVersionId: srcVersion, Ciphertext: ct}, nil
}

func (c cryptoServer) GenerateDataKey(ctx context.Context, req *kmspb.GenerateDataKeyRequest) (*kmspb.GenerateDataKeyResponse, error) {
	if err := checkLimits(nil, req.GetAadContext()); err != nil {
		return nil, err
	}
	k, err := c.s.useKey(ctx, req.GetKeyId(), cryptoAccess)
	if err != nil {
		return nil, err
	}
	size := 32
	switch req.GetDataKeySpec() {
	case kmspb.SymmetricAlgorithm_AES_128:
		size = 16
	case kmspb.SymmetricAlgorithm_AES_192:
		size = 24
	case kmspb.SymmetricAlgorithm_SYMMETRIC_ALGORITHM_UNSPECIFIED, kmspb.SymmetricAlgorithm_AES_256, kmspb.SymmetricAlgorithm_AES_256_HSM:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "yandexemu: data_key_spec %s not supported", req.GetDataKeySpec())
	}
	dek := make([]byte, size)
	if _, err := rand.Read(dek); err != nil {
		return nil, status.Error(codes.Internal, "yandexemu: no randomness")
	}
	ct, v, err := c.s.seal(k, req.GetVersionId(), dek, req.GetAadContext())
	if err != nil {
		return nil, err
	}
	resp := &kmspb.GenerateDataKeyResponse{KeyId: k.id, VersionId: v, DataKeyCiphertext: ct}
	if !req.GetSkipPlaintext() {
		resp.DataKeyPlaintext = dek
	}
	return resp, nil
}

// keyServer is SymmetricKeyService (Get only).
type keyServer struct {
	kmspb.UnimplementedSymmetricKeyServiceServer
	s *Server
}

func (ks keyServer) Get(ctx context.Context, req *kmspb.GetSymmetricKeyRequest) (*kmspb.SymmetricKey, error) {
	k, err := ks.s.useKey(ctx, req.GetKeyId(), metadataAccess)
	if err != nil {
		return nil, err
	}
	ks.s.mu.Lock()
	defer ks.s.mu.Unlock()
	st := kmspb.SymmetricKey_ACTIVE
	if k.state != KeyActive {
		st = kmspb.SymmetricKey_INACTIVE
	}
	return &kmspb.SymmetricKey{
		Id:               k.id,
		Name:             k.id,
		Status:           st,
		DefaultAlgorithm: kmspb.SymmetricAlgorithm_AES_256,
		PrimaryVersion: &kmspb.SymmetricKeyVersion{
			Id:        k.primary,
			KeyId:     k.id,
			Status:    kmspb.SymmetricKeyVersion_ACTIVE,
			Algorithm: kmspb.SymmetricAlgorithm_AES_256,
			Primary:   true,
		},
	}, nil
}

// endpointServer is ApiEndpointService: every service the provider uses is here.
type endpointServer struct {
	endpointpb.UnimplementedApiEndpointServiceServer
	s *Server
}

var endpointIDs = []string{"endpoint", "iam", "kms", "kms-crypto"}

func (e endpointServer) List(context.Context, *endpointpb.ListApiEndpointsRequest) (*endpointpb.ListApiEndpointsResponse, error) {
	resp := &endpointpb.ListApiEndpointsResponse{}
	for _, id := range endpointIDs {
		resp.Endpoints = append(resp.Endpoints, &endpointpb.ApiEndpoint{Id: id, Address: e.s.addr})
	}
	return resp, nil
}

func (e endpointServer) Get(_ context.Context, req *endpointpb.GetApiEndpointRequest) (*endpointpb.ApiEndpoint, error) {
	for _, id := range endpointIDs {
		if id == req.GetApiEndpointId() {
			return &endpointpb.ApiEndpoint{Id: id, Address: e.s.addr}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "yandexemu: no endpoint %s", req.GetApiEndpointId())
}
