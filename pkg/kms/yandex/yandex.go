// Package yandex is the KMS provider for Yandex Cloud Key Management Service, through the Yandex
// Go SDK (github.com/yandex-cloud/go-sdk/v2) and the generated gRPC types of go-genproto
// (yandex/cloud/kms/v1). Its emulator for tests lives in kms/yandex/yandexemu; nothing here talks
// to anything but the KMS and IAM APIs.
//
// # SDK line
//
// The v2 module (github.com/yandex-cloud/go-sdk/v2) is used, not v1 (github.com/yandex-cloud/go-sdk
// v0.x). Both are still published, and both take a service account authorized key (iamkey.Key →
// credentials.ServiceAccountKey, which signs a PS256 JWT that the SDK exchanges at
// IamTokenService/Create). v2 is the current major version — the one its README installs — and
// its options fit what byok needs: an endpoints resolver pins IAM and KMS to one endpoint with
// byok's own transport credentials (TLS with a private CA, or plaintext for the emulator), so no
// discovery call is made; the Authenticator is pluggable; connections are grpc.NewClient pools;
// and no retries are added unless asked. v1 always resolves endpoints through
// ApiEndpointService/List on first use and dials with gRPC's deprecated blocking options.
//
// # Credential
//
// What a tenant pastes is either the authorized key JSON itself, as Yandex produces it:
//
//	{"id": "aje…", "service_account_id": "aje…", "created_at": "…", "key_algorithm": "RSA_2048",
//	 "public_key": "-----BEGIN PUBLIC KEY-----…", "private_key": "PLEASE DO NOT REMOVE THIS LINE! … <PEM of the RSA private key> …"}
//
// or that object wrapped, to point byok at a private installation:
//
//	{"authorized_key": {…the key above…}, "endpoint": "kms.private.example:443"}
//
// With "endpoint", IAM token exchange, SymmetricKeyService and SymmetricCryptoService are all
// called at that one host:port (TLS; no endpoint discovery). Without it the SDK discovers Yandex
// Cloud's own endpoints (api.cloud.yandex.net:443), which is a network call made on first use, not
// in New. Plaintext gRPC is not a tenant's choice — the DEKs travel in Encrypt requests — so it is
// an Options field, and only allowed towards a loopback address (the emulator).
//
// The service account needs the kms.keys.encrypterDecrypter role (or kms.keys.user) on the key:
// it allows encrypt, decrypt and reading the key's metadata.
//
// # Calls
//
// Wrap is one SymmetricCryptoService/Encrypt per DEK with aad_context = the request's Context;
// Unwrap is one Decrypt per wrapped DEK. Yandex has no batch call, so a batch runs with bounded
// concurrency (Options.MaxInFlight, default 16), results in request order, each with its own
// error. Yandex's limits are checked before any call: plaintext ≤ 32 KiB, aad_context ≤ 8 KiB
// (an item error wrapping ErrLimit and kms.ErrInvalidCiphertext). KEKVersion is the key version id
// Yandex returns in EncryptResponse. Describe is SymmetricKeyService/Get (the control plane, on the
// same endpoint override): it reports the primary version and fails with kms.ErrAccessDenied for
// an inactive key.
//
// gRPC codes map onto the seam's sentinels: PermissionDenied, Unauthenticated and
// FailedPrecondition (key inactive) → kms.ErrAccessDenied; NotFound → kms.ErrKeyNotFound;
// InvalidArgument → kms.ErrInvalidCiphertext (on Decrypt: corrupt ciphertext, another key's
// ciphertext, wrong aad_context; on Encrypt: input Yandex refuses); Unavailable,
// DeadlineExceeded, ResourceExhausted, a cancelled context and every other code →
// kms.ErrUnavailable. When every item of a call fails with the same key-level sentinel (access
// denied, unavailable, key not found), that error is returned as the whole-call error.
//
// The IAM token is fetched before a batch starts and cached until half its life or an hour has
// passed, whichever is sooner. Fetching it up front is not only thrift: the SDK's middleware
// reports every failed token exchange as Unauthenticated, which would turn an unreachable IAM
// into "access denied"; fetched here, the failure keeps its real code and fails the whole call.
// GenerateDataKey is not used: byok generates its DEKs itself.
//
// # Retries
//
// The client never retries: retry with backoff is a wrapper on the KMS seam, and denied or
// not-found answers must not be retried at all.
//
// # Revocation
//
// Yandex KMS key state changes (deactivating a key, destroying a version) are eventually
// consistent and may take up to 3 hours to reach every KMS node. Revoking the service account's
// role on the key is the fast path for a customer who wants byok cut off now.
package yandex

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	kmspb "github.com/yandex-cloud/go-genproto/yandex/cloud/kms/v1"
	ycsdk "github.com/yandex-cloud/go-sdk/v2"
	"github.com/yandex-cloud/go-sdk/v2/credentials"
	"github.com/yandex-cloud/go-sdk/v2/pkg/authentication"
	"github.com/yandex-cloud/go-sdk/v2/pkg/endpoints"
	"github.com/yandex-cloud/go-sdk/v2/pkg/options"
	iamsdk "github.com/yandex-cloud/go-sdk/v2/services/iam/v1"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/byok-io/byok/pkg/kms"
)

// Provider is the provider name of this package.
const Provider = "yandex"

// Yandex KMS limits (bytes), checked before calling.
const (
	MaxPlaintext  = 32 << 10
	MaxAADContext = 8 << 10
)

// ErrLimit marks an item that exceeds a Yandex KMS limit. Such items also wrap
// kms.ErrInvalidCiphertext: the input is unusable with this key, and retrying will not help.
var ErrLimit = errors.New("yandex: input exceeds a Yandex KMS limit")

// Options tune the client. The zero value is the production setting.
type Options struct {
	// MaxInFlight bounds the concurrent Encrypt/Decrypt calls of one Wrap or Unwrap (default 16).
	MaxInFlight int
	// CallTimeout bounds each KMS call and the IAM token exchange (default 10s).
	CallTimeout time.Duration
	// Plaintext speaks gRPC without TLS. Only for a loopback Credential.Endpoint (the emulator).
	Plaintext bool
	// TLSConfig is used towards a credential's endpoint override (e.g. a private installation's
	// CA). Nil: system roots. Yandex Cloud's own discovered endpoints always use system roots.
	TLSConfig *tls.Config
}

func (o *Options) validate(cred Credential) error {
	if o.MaxInFlight < 0 {
		return errors.New("yandex: Options.MaxInFlight must not be negative")
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 16
	}
	if o.CallTimeout < 0 {
		return errors.New("yandex: Options.CallTimeout must not be negative")
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 10 * time.Second
	}
	if o.Plaintext {
		host, err := splitEndpoint(cred.Endpoint)
		if err != nil || !isLoopback(host) {
			return errors.New("yandex: Options.Plaintext is only allowed with a loopback credential endpoint")
		}
		if o.TLSConfig != nil {
			return errors.New("yandex: Options.Plaintext and Options.TLSConfig exclude each other")
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Method names as the SDK's endpoint resolver sees them.
const (
	methodEncrypt = protoreflect.FullName("yandex.cloud.kms.v1.SymmetricCryptoService.Encrypt")
	methodDecrypt = protoreflect.FullName("yandex.cloud.kms.v1.SymmetricCryptoService.Decrypt")
	methodGetKey  = protoreflect.FullName("yandex.cloud.kms.v1.SymmetricKeyService.Get")
)

// Client is one Yandex KMS symmetric key reached with one service account key.
type Client struct {
	keyID string
	cred  Credential
	opts  Options
	creds credentials.Credentials
	iam   *tokenCache

	mu     sync.Mutex
	sdk    *ycsdk.SDK // built on first use when the SDK must discover endpoints
	closed bool
}

var _ kms.KMS = (*Client)(nil)

// New returns a client for the symmetric key keyID. It makes no call yet.
func New(cred Credential, keyID string, opts Options) (*Client, error) {
	if keyID == "" {
		return nil, errors.New("yandex: key id is required")
	}
	if err := cred.validate(); err != nil {
		return nil, err
	}
	if err := opts.validate(cred); err != nil {
		return nil, err
	}
	creds, err := credentials.ServiceAccountKey(cred.AuthorizedKey.iamKey())
	if err != nil {
		// The SDK's message may describe the key; ours does not.
		return nil, errors.New("yandex: credential: the SDK rejected the authorized key")
	}
	c := &Client{keyID: keyID, cred: cred, opts: opts, creds: creds, iam: &tokenCache{sem: make(chan struct{}, 1)}}
	if cred.Endpoint != "" {
		// With a fixed endpoint Build makes no call, so the SDK is ready now.
		if _, err := c.client(context.Background()); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// client returns the SDK, building it on first use.
func (c *Client) client(ctx context.Context) (*ycsdk.SDK, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("yandex: key %s: client is closed", c.keyID)
	}
	if c.sdk != nil {
		return c.sdk, nil
	}
	opts := []options.Option{
		options.WithCredentials(c.creds),
		options.WithAuthenticator(c.iam),
		options.WithLogger(zap.NewNop()),
	}
	if c.cred.Endpoint != "" {
		// Every Yandex Cloud API byok uses (iam, kms, kms-crypto) at the one endpoint, with
		// byok's transport settings (the SDK's prefix resolver would force default TLS).
		transport := grpc.WithTransportCredentials(grpccreds.NewTLS(c.tlsConfig()))
		if c.opts.Plaintext {
			opts = append(opts, options.WithPlaintext())
			transport = grpc.WithTransportCredentials(insecure.NewCredentials())
		}
		opts = append(opts, options.WithEndpointsResolver(endpoints.NewSingleEndpointResolver(c.cred.Endpoint, transport)))
	}
	bctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	sdk, err := ycsdk.Build(bctx, opts...)
	if err != nil {
		// Only endpoint discovery can fail here: the API could not be reached.
		return nil, mapErr("connect", c.keyID, fmt.Errorf("endpoint discovery: %w", err))
	}
	c.iam.setInner(authentication.NewAuthenticator(zap.NewNop(), c.creds, iamsdk.NewIamTokenClient(sdk)))
	c.sdk = sdk
	return sdk, nil
}

// Provider implements kms.KMS.
func (c *Client) Provider() string { return Provider }

// KEKID implements kms.KMS.
func (c *Client) KEKID() string { return c.keyID }

// Close implements kms.KMS: closes the SDK's connections. Calls after Close fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.sdk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.sdk.Shutdown(ctx)
}

// ready returns the SDK with a valid IAM token in cache, so that auth failures surface once, with
// their real cause, instead of once per item as Unauthenticated (the SDK's middleware turns every
// token-exchange failure into Unauthenticated).
func (c *Client) ready(ctx context.Context, op string) (*ycsdk.SDK, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("yandex: %s %s: %w: %w", op, c.keyID, kms.ErrUnavailable, err)
	}
	sdk, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	if _, err := c.iam.CreateIAMToken(tctx); err != nil {
		return nil, mapErr(op, c.keyID, fmt.Errorf("IAM token exchange: %w", err))
	}
	return sdk, nil
}

// Describe implements kms.KMS with SymmetricKeyService/Get.
func (c *Client) Describe(ctx context.Context) (kms.KeyInfo, error) {
	sdk, err := c.ready(ctx, "describe")
	if err != nil {
		return kms.KeyInfo{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	conn, err := sdk.GetConnection(cctx, methodGetKey)
	if err != nil {
		return kms.KeyInfo{}, mapErr("describe", c.keyID, err)
	}
	key, err := kmspb.NewSymmetricKeyServiceClient(conn).Get(cctx, &kmspb.GetSymmetricKeyRequest{KeyId: c.keyID})
	if err != nil {
		return kms.KeyInfo{}, mapErr("describe", c.keyID, err)
	}
	switch key.GetStatus() {
	case kmspb.SymmetricKey_ACTIVE:
	case kmspb.SymmetricKey_CREATING:
		return kms.KeyInfo{}, fmt.Errorf("yandex: describe %s: key is still being created: %w", c.keyID, kms.ErrUnavailable)
	default:
		return kms.KeyInfo{}, fmt.Errorf("yandex: describe %s: key status %s: %w", c.keyID, key.GetStatus(), kms.ErrAccessDenied)
	}
	if key.GetPrimaryVersion().GetId() == "" {
		return kms.KeyInfo{}, fmt.Errorf("yandex: describe %s: key has no primary version: %w", c.keyID, kms.ErrAccessDenied)
	}
	return kms.KeyInfo{Provider: Provider, KEKID: c.keyID, LatestVersion: key.GetPrimaryVersion().GetId()}, nil
}

// Wrap implements kms.KMS: one Encrypt per DEK, at most Options.MaxInFlight at a time.
func (c *Client) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	out := make([]kms.WrapResult, len(reqs))
	todo := make([]int, 0, len(reqs))
	for i, r := range reqs {
		switch {
		case len(r.DEK) > MaxPlaintext:
			out[i].Err = fmt.Errorf("yandex: encrypt %s: DEK of %d bytes, limit %d: %w (%w)", c.keyID, len(r.DEK), MaxPlaintext, ErrLimit, kms.ErrInvalidCiphertext)
		case len(r.Context) > MaxAADContext:
			out[i].Err = fmt.Errorf("yandex: encrypt %s: context of %d bytes, limit %d: %w (%w)", c.keyID, len(r.Context), MaxAADContext, ErrLimit, kms.ErrInvalidCiphertext)
		default:
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return out, nil
	}
	sdk, err := c.ready(ctx, "encrypt")
	if err != nil {
		return nil, err
	}
	c.fanOut(ctx, todo, func(ctx context.Context, i int) {
		conn, err := sdk.GetConnection(ctx, methodEncrypt)
		if err != nil {
			out[i].Err = mapErr("encrypt", c.keyID, err)
			return
		}
		resp, err := kmspb.NewSymmetricCryptoServiceClient(conn).Encrypt(ctx, &kmspb.SymmetricEncryptRequest{
			KeyId:      c.keyID,
			AadContext: reqs[i].Context,
			Plaintext:  reqs[i].DEK,
		})
		switch {
		case err != nil:
			out[i].Err = mapErr("encrypt", c.keyID, err)
		case resp.GetKeyId() != c.keyID || resp.GetVersionId() == "" || len(resp.GetCiphertext()) == 0:
			out[i].Err = fmt.Errorf("yandex: encrypt %s: malformed response (key %q, version %q, %d ciphertext bytes): %w",
				c.keyID, resp.GetKeyId(), resp.GetVersionId(), len(resp.GetCiphertext()), kms.ErrUnavailable)
		default:
			out[i].WrappedDEK = resp.GetCiphertext()
			out[i].KEKVersion = resp.GetVersionId()
		}
	})
	if err := wholeCall(out, todo, func(r kms.WrapResult) error { return r.Err }); err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap implements kms.KMS: one Decrypt per wrapped DEK, at most Options.MaxInFlight at a time.
func (c *Client) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	out := make([]kms.UnwrapResult, len(reqs))
	todo := make([]int, 0, len(reqs))
	for i, r := range reqs {
		switch {
		case len(r.Context) > MaxAADContext:
			out[i].Err = fmt.Errorf("yandex: decrypt %s: context of %d bytes, limit %d: %w (%w)", c.keyID, len(r.Context), MaxAADContext, ErrLimit, kms.ErrInvalidCiphertext)
		case len(r.WrappedDEK) == 0:
			out[i].Err = fmt.Errorf("yandex: decrypt %s: empty wrapped DEK: %w", c.keyID, kms.ErrInvalidCiphertext)
		default:
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return out, nil
	}
	sdk, err := c.ready(ctx, "decrypt")
	if err != nil {
		return nil, err
	}
	c.fanOut(ctx, todo, func(ctx context.Context, i int) {
		conn, err := sdk.GetConnection(ctx, methodDecrypt)
		if err != nil {
			out[i].Err = mapErr("decrypt", c.keyID, err)
			return
		}
		resp, err := kmspb.NewSymmetricCryptoServiceClient(conn).Decrypt(ctx, &kmspb.SymmetricDecryptRequest{
			KeyId:      c.keyID,
			AadContext: reqs[i].Context,
			Ciphertext: reqs[i].WrappedDEK,
		})
		if err != nil {
			out[i].Err = mapErr("decrypt", c.keyID, err)
			return
		}
		out[i].DEK = resp.GetPlaintext()
	})
	if err := wholeCall(out, todo, func(r kms.UnwrapResult) error { return r.Err }); err != nil {
		for i := range out {
			kms.Zero(out[i].DEK)
		}
		return nil, err
	}
	return out, nil
}

// fanOut runs do for every index in todo, at most MaxInFlight at a time, each with its own
// CallTimeout. Items not started when ctx ends get ctx's error through do (the RPC fails at once).
func (c *Client) fanOut(ctx context.Context, todo []int, do func(ctx context.Context, i int)) {
	kms.ForEach(todo, c.opts.MaxInFlight, func(i int) {
		cctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
		defer cancel()
		do(cctx, i)
	})
}

// wholeCall returns the common error when every attempted item failed with the same key-level
// sentinel: then nothing was done, and the seam wants a whole-call error.
func wholeCall[T any](out []T, todo []int, errOf func(T) error) error {
	if len(todo) != len(out) {
		return nil // some items were refused locally; keep per-item results
	}
	var first error
	for _, i := range todo {
		err := errOf(out[i])
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	for _, s := range []error{kms.ErrAccessDenied, kms.ErrUnavailable, kms.ErrKeyNotFound} {
		if !errors.Is(first, s) {
			continue
		}
		for _, i := range todo {
			if !errors.Is(errOf(out[i]), s) {
				return nil
			}
		}
		return first
	}
	return nil
}

// mapErr maps an SDK or gRPC failure onto the KMS sentinels. The gRPC status message is kept (it
// names the key and the reason, never plaintext).
func mapErr(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("yandex: %s %s: %w: %w", op, key, kms.ErrUnavailable, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("yandex: %s %s: %w: %v", op, key, kms.ErrUnavailable, err)
	}
	msg := st.Message()
	var sentinel error
	switch st.Code() {
	case codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition:
		sentinel = kms.ErrAccessDenied
	case codes.NotFound:
		sentinel = kms.ErrKeyNotFound
	case codes.InvalidArgument:
		// On Decrypt: corrupt ciphertext, another key's ciphertext or the wrong aad_context.
		// On Encrypt Yandex refuses only malformed input: not transient either.
		sentinel = kms.ErrInvalidCiphertext
	default:
		// Unavailable, DeadlineExceeded, ResourceExhausted, Canceled, Aborted, Internal, …:
		// worth a retry by the retry wrapper.
		sentinel = kms.ErrUnavailable
	}
	return fmt.Errorf("yandex: %s %s: %s: %s: %w", op, key, st.Code(), msg, sentinel)
}

func (c *Client) tlsConfig() *tls.Config {
	if c.opts.TLSConfig != nil {
		return c.opts.TLSConfig.Clone()
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// tokenCache is the Authenticator handed to the SDK: it wraps the SDK's own JWT → IAM token
// exchange, caches the token, and lets the client fetch it before a batch so that a failed
// exchange surfaces with its real gRPC code.
type tokenCache struct {
	sem chan struct{} // one exchange at a time; waiters honour their context

	mu        sync.Mutex
	inner     authentication.Authenticator
	token     string
	refreshAt time.Time
}

func (t *tokenCache) setInner(a authentication.Authenticator) {
	t.mu.Lock()
	t.inner = a
	t.mu.Unlock()
}

func (t *tokenCache) cached() (authentication.IamToken, authentication.Authenticator) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && time.Now().Before(t.refreshAt) {
		return authentication.NewIamToken(t.token, t.refreshAt), t.inner
	}
	return nil, t.inner
}

// CreateIAMToken implements authentication.Authenticator. The expiry it reports is the refresh
// time, so the SDK's middleware comes back for a new token in time.
func (t *tokenCache) CreateIAMToken(ctx context.Context) (authentication.IamToken, error) {
	if tok, _ := t.cached(); tok != nil {
		return tok, nil
	}
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-t.sem }()
	tok, inner := t.cached()
	if tok != nil {
		return tok, nil
	}
	if inner == nil {
		return nil, errors.New("yandex: IAM authenticator not ready")
	}
	fresh, err := inner.CreateIAMToken(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	life := fresh.GetExpiresAt().Sub(now)
	if life <= 0 {
		return nil, status.Error(codes.Unauthenticated, "IAM returned an expired token")
	}
	t.mu.Lock()
	t.token = fresh.GetIamToken()
	t.refreshAt = now.Add(min(life/2, time.Hour))
	tok = authentication.NewIamToken(t.token, t.refreshAt)
	t.mu.Unlock()
	return tok, nil
}

// CreateIAMTokenForServiceAccount implements authentication.Authenticator (delegation; byok does
// not use it).
func (t *tokenCache) CreateIAMTokenForServiceAccount(ctx context.Context, serviceAccountID string) (authentication.IamToken, error) {
	_, inner := t.cached()
	if inner == nil {
		return nil, errors.New("yandex: IAM authenticator not ready")
	}
	return inner.CreateIAMTokenForServiceAccount(ctx, serviceAccountID)
}
