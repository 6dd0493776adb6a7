package yandex_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	endpointpb "github.com/yandex-cloud/go-genproto/yandex/cloud/endpoint"
	iampb "github.com/yandex-cloud/go-genproto/yandex/cloud/iam/v1"
	kmspb "github.com/yandex-cloud/go-genproto/yandex/cloud/kms/v1"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/kmstest"
	"github.com/byok-io/byok/pkg/kms/yandex"
	"github.com/byok-io/byok/pkg/kms/yandex/yandexemu"
)

var (
	encryptMethod = kmspb.SymmetricCryptoService_Encrypt_FullMethodName
	iamCreate     = iampb.IamTokenService_Create_FullMethodName
)

var keySeq atomic.Int64

// newKey creates a fresh key on emu, granted to serviceAccount unless serviceAccount is "".
func newKey(t *testing.T, emu *yandexemu.Server, serviceAccount string) string {
	t.Helper()
	id := fmt.Sprintf("abj-key-%d", keySeq.Add(1))
	if err := emu.CreateKey(id); err != nil {
		t.Fatal(err)
	}
	if serviceAccount != "" {
		if err := emu.Grant(serviceAccount, id); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// credential wraps an authorized key JSON with the emulator's endpoint and parses it, as a
// tenant's pasted credential would be.
func credential(t *testing.T, emu *yandexemu.Server, keyJSON []byte) yandex.Credential {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"authorized_key": json.RawMessage(keyJSON), "endpoint": emu.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := yandex.ParseCredential(raw)
	if err != nil {
		t.Fatalf("ParseCredential(emulator key) err = %v", err)
	}
	return cred
}

func authorizedKey(t *testing.T, emu *yandexemu.Server, serviceAccount string) []byte {
	t.Helper()
	js, err := emu.NewAuthorizedKey(serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func testOptions() yandex.Options {
	return yandex.Options{Plaintext: true, CallTimeout: 2 * time.Second}
}

func newClient(t *testing.T, cred yandex.Credential, keyID string, opts yandex.Options) *yandex.Client {
	t.Helper()
	c, err := yandex.New(cred, keyID, opts)
	if err != nil {
		t.Fatalf("New err = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fixture is one emulator with one service account and its authorized key.
type fixture struct {
	emu  *yandexemu.Server
	sa   string
	cred yandex.Credential
}

func newFixture(t *testing.T) *fixture {
	emu := yandexemu.Start(t)
	sa := "aje-sa-byok"
	return &fixture{emu: emu, sa: sa, cred: credential(t, emu, authorizedKey(t, emu, sa))}
}

func (f *fixture) client(t *testing.T, keyID string) *yandex.Client {
	return newClient(t, f.cred, keyID, testOptions())
}

func TestConformance(t *testing.T) {
	f := newFixture(t)
	harness := func(denied func(t *testing.T) kms.KMS) kmstest.Harness {
		return kmstest.Harness{
			New:    func(t *testing.T) kms.KMS { return f.client(t, newKey(t, f.emu, f.sa)) },
			Denied: denied,
			Unavailable: func(t *testing.T) kms.KMS {
				// A separate emulator that dies: the client has never reached it.
				dead := yandexemu.Start(t)
				sa := "aje-sa-dead"
				cred := credential(t, dead, authorizedKey(t, dead, sa))
				key := newKey(t, dead, sa)
				dead.Stop()
				return newClient(t, cred, key, testOptions())
			},
			UnknownKey: func(t *testing.T) kms.KMS { return f.client(t, "abj-no-such-key") },
		}
	}
	t.Run("revoked", func(t *testing.T) {
		kmstest.Run(t, harness(func(t *testing.T) kms.KMS {
			key := newKey(t, f.emu, f.sa)
			if err := f.emu.Revoke(f.sa, key); err != nil {
				t.Fatal(err)
			}
			return f.client(t, key)
		}))
	})
	t.Run("disabled", func(t *testing.T) {
		kmstest.Run(t, harness(func(t *testing.T) kms.KMS {
			key := newKey(t, f.emu, f.sa)
			if err := f.emu.SetKeyState(key, yandexemu.KeyInactive); err != nil {
				t.Fatal(err)
			}
			return f.client(t, key)
		}))
	})
}

// canary is planted in the private key of the credentials below; it must never reach an error
// message or String().
const canary = "CANARY-d41d8cd98f00b204"

func canaryKeyJSON(t *testing.T) (map[string]any, string) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return map[string]any{
		"id":                 "ajk-canary",
		"service_account_id": "aje-canary",
		"created_at":         "2026-01-02T03:04:05Z",
		"key_algorithm":      "RSA_2048",
		"public_key":         "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n",
		"private_key":        "PLEASE DO NOT REMOVE THIS LINE! " + canary + "\n" + pemText,
	}, pemText
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCredential(t *testing.T) {
	key, pemText := canaryKeyJSON(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	bare := mustJSON(t, key)

	cases := []struct {
		name         string
		raw          []byte
		wantErr      string // substring; "" means success
		wantEndpoint string
	}{
		{name: "bare authorized key", raw: bare},
		{name: "wrapped with endpoint", raw: mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "kms.private.example:443"}), wantEndpoint: "kms.private.example:443"},
		{name: "wrapped without endpoint", raw: mustJSON(t, map[string]any{"authorized_key": key})},
		{name: "unknown key fields ignored", raw: mustJSON(t, with(key, "description", "made by yc"))},
		{name: "truncated JSON", raw: bare[:len(bare)/2], wantErr: "authorized key JSON"},
		{name: "not an object", raw: mustJSON(t, canary), wantErr: "authorized key JSON"},
		{name: "null", raw: []byte("null"), wantErr: "authorized key JSON"},
		{name: "empty", raw: nil, wantErr: "authorized key JSON"},
		{name: "wrong field type", raw: mustJSON(t, with(key, "id", 42)), wantErr: "authorized key JSON"},
		{name: "missing id", raw: mustJSON(t, with(key, "id", nil)), wantErr: "lacks id"},
		{name: "missing service account", raw: mustJSON(t, with(key, "service_account_id", nil)), wantErr: "service_account_id"},
		{name: "user account key", raw: mustJSON(t, with(with(key, "service_account_id", nil), "user_account_id", "aje-user")), wantErr: "service_account_id"},
		{name: "missing private key", raw: mustJSON(t, with(key, "private_key", nil)), wantErr: "private_key"},
		{name: "private key not PEM", raw: mustJSON(t, with(key, "private_key", canary)), wantErr: "not a PEM-encoded RSA"},
		{name: "private key PEM garbage", raw: mustJSON(t, with(key, "private_key", "-----BEGIN PRIVATE KEY-----\n"+canary+"\n-----END PRIVATE KEY-----\n")), wantErr: "not a PEM-encoded RSA"},
		{name: "private key not RSA", raw: mustJSON(t, with(key, "private_key", ecPEM)), wantErr: "not a PEM-encoded RSA"},
		{name: "bad algorithm", raw: mustJSON(t, with(key, "key_algorithm", canary)), wantErr: "key_algorithm"},
		{name: "endpoint beside key fields", raw: mustJSON(t, with(key, "endpoint", "h:1")), wantErr: "goes next to the key"},
		{name: "wrapper unknown field", raw: mustJSON(t, map[string]any{"authorized_key": key, "token": canary}), wantErr: "accepts only"},
		{name: "wrapper key not object", raw: mustJSON(t, map[string]any{"authorized_key": canary}), wantErr: "authorized key JSON"},
		{name: "endpoint with scheme", raw: mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "https://kms.example/" + canary}), wantErr: "host:port"},
		{name: "endpoint without port", raw: mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "kms.example"}), wantErr: "host:port"},
		{name: "endpoint bad port", raw: mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "kms.example:99999"}), wantErr: "port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := yandex.ParseCredential(tc.raw)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseCredential err = %v, want nil", err)
				}
				if cred.Endpoint != tc.wantEndpoint || cred.AuthorizedKey.ID != "ajk-canary" || cred.AuthorizedKey.ServiceAccountID != "aje-canary" {
					t.Fatalf("ParseCredential = %v, want key ajk-canary of aje-canary at %q", cred, tc.wantEndpoint)
				}
				for _, s := range []string{cred.String(), fmt.Sprintf("%v|%+v|%#v|%v|%s", cred, cred, cred, &cred, cred.AuthorizedKey)} {
					if strings.Contains(s, canary) || strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, pemText[40:80]) {
						t.Fatalf("printing the credential leaks the private key: %s", s)
					}
				}
				c, err := yandex.New(cred, "abj-key", yandex.Options{})
				if err != nil {
					t.Fatalf("New(parsed credential) err = %v", err)
				}
				_ = c.Close()
				return
			}
			if err == nil {
				t.Fatalf("ParseCredential err = nil, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseCredential err = %v, want it to mention %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), pemText[40:80]) {
				t.Fatalf("ParseCredential err = %v: echoes the secret input", err)
			}
		})
	}
}

func TestOptionsValidated(t *testing.T) {
	key, _ := canaryKeyJSON(t)
	remote, err := yandex.ParseCredential(mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "kms.private.example:443"}))
	if err != nil {
		t.Fatal(err)
	}
	local, err := yandex.ParseCredential(mustJSON(t, map[string]any{"authorized_key": key, "endpoint": "127.0.0.1:9"}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		cred    yandex.Credential
		key     string
		opts    yandex.Options
		wantErr string
	}{
		{"plaintext to a remote endpoint", remote, "k", yandex.Options{Plaintext: true}, "Options.Plaintext"},
		{"plaintext without endpoint", yandex.Credential{AuthorizedKey: local.AuthorizedKey}, "k", yandex.Options{Plaintext: true}, "Options.Plaintext"},
		{"negative concurrency", local, "k", yandex.Options{MaxInFlight: -1}, "Options.MaxInFlight"},
		{"negative timeout", local, "k", yandex.Options{CallTimeout: -time.Second}, "Options.CallTimeout"},
		{"no key id", local, "", yandex.Options{}, "key id"},
		{"plaintext to loopback", local, "k", yandex.Options{Plaintext: true}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := yandex.New(tc.cred, tc.key, tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New err = %v, want nil", err)
				}
				_ = c.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New err = %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestLimitsCheckedBeforeCalling(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, newKey(t, f.emu, f.sa))
	ctx := context.Background()
	isLimit := func(err error) bool {
		return errors.Is(err, yandex.ErrLimit) && errors.Is(err, kms.ErrInvalidCiphertext) && !kms.Retryable(err)
	}

	res, err := c.Wrap(ctx, []kms.WrapRequest{
		{DEK: make([]byte, 33<<10), Context: []byte("ctx")},
		{DEK: make([]byte, 32), Context: make([]byte, 9<<10)},
	})
	if err != nil {
		t.Fatalf("Wrap(oversized) call err = %v, want per-item errors", err)
	}
	for i, r := range res {
		if !isLimit(r.Err) || r.WrappedDEK != nil {
			t.Fatalf("Wrap(oversized) item %d = %+v, want ErrLimit", i, r)
		}
	}
	ures, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: []byte("x"), Context: make([]byte, 9<<10)}})
	if err != nil || !isLimit(ures[0].Err) {
		t.Fatalf("Unwrap(9 KiB context) = %v, %v, want item ErrLimit", ures, err)
	}
	if n := f.emu.Calls(""); n != 0 {
		t.Fatalf("emulator saw %d calls, want none for requests over the limits", n)
	}

	// Exactly at the limits is fine, and a refused item does not spoil its neighbours.
	atLimit := make([]byte, yandex.MaxPlaintext)
	res, err = c.Wrap(ctx, []kms.WrapRequest{
		{DEK: atLimit, Context: make([]byte, yandex.MaxAADContext)},
		{DEK: make([]byte, yandex.MaxPlaintext+1)},
	})
	if err != nil || res[0].Err != nil || !isLimit(res[1].Err) {
		t.Fatalf("Wrap(at limit, over limit) = %v, %v; want success then ErrLimit", res, err)
	}
	if n := f.emu.Calls(encryptMethod); n != 1 {
		t.Fatalf("emulator saw %d Encrypt calls, want 1", n)
	}
	ures, err = c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: res[0].WrappedDEK, Context: make([]byte, yandex.MaxAADContext)}})
	if err != nil || ures[0].Err != nil || !bytes.Equal(ures[0].DEK, atLimit) {
		t.Fatalf("Unwrap(at limit) err = %v / %v", err, ures[0].Err)
	}
}

func TestConcurrencyBounded(t *testing.T) {
	for _, tc := range []struct {
		maxInFlight, items int
		want               int64 // the bound
	}{
		{maxInFlight: 3, items: 24, want: 3},
		{maxInFlight: 0, items: 64, want: 16}, // default
	} {
		t.Run(fmt.Sprintf("max=%d", tc.maxInFlight), func(t *testing.T) {
			f := newFixture(t)
			opts := testOptions()
			opts.MaxInFlight = tc.maxInFlight
			c := newClient(t, f.cred, newKey(t, f.emu, f.sa), opts)
			f.emu.SetLatency(25 * time.Millisecond)
			reqs := make([]kms.WrapRequest, tc.items)
			for i := range reqs {
				reqs[i] = kms.WrapRequest{DEK: bytes.Repeat([]byte{byte(i)}, 32), Context: []byte(fmt.Sprint(i))}
			}
			res, err := c.Wrap(context.Background(), reqs)
			if err != nil {
				t.Fatalf("Wrap err = %v", err)
			}
			got := f.emu.MaxInFlight()
			if got > tc.want {
				t.Fatalf("emulator saw %d Encrypt calls in flight, want at most %d", got, tc.want)
			}
			if got < tc.want/2+1 {
				t.Fatalf("emulator saw at most %d Encrypt calls in flight, want about %d: the batch is not concurrent", got, tc.want)
			}
			ureqs := make([]kms.UnwrapRequest, len(res))
			for i, r := range res {
				ureqs[i] = kms.UnwrapRequest{WrappedDEK: r.WrappedDEK, Context: reqs[i].Context}
			}
			ures, err := c.Unwrap(context.Background(), ureqs)
			if err != nil {
				t.Fatalf("Unwrap err = %v", err)
			}
			for i, r := range ures {
				if r.Err != nil || !bytes.Equal(r.DEK, reqs[i].DEK) {
					t.Fatalf("Unwrap item %d err = %v, DEK in order = %v", i, r.Err, bytes.Equal(r.DEK, reqs[i].DEK))
				}
			}
		})
	}
}

// keyID reads "id" from an authorized key JSON.
func keyID(t *testing.T, js []byte) string {
	t.Helper()
	var k struct{ ID string }
	if err := json.Unmarshal(js, &k); err != nil || k.ID == "" {
		t.Fatalf("authorized key JSON without id: %v", err)
	}
	return k.ID
}

func TestJWTVerified(t *testing.T) {
	f := newFixture(t)
	key := newKey(t, f.emu, f.sa)
	genuine := authorizedKey(t, f.emu, f.sa)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forgedKey, err := yandexemu.AuthorizedKeyJSON(keyID(t, genuine), f.sa, other)
	if err != nil {
		t.Fatal(err)
	}
	// The genuine key of another service account, claiming to be f.sa.
	stranger := authorizedKey(t, f.emu, "aje-sa-stranger")
	var claimed map[string]any
	if err := json.Unmarshal(stranger, &claimed); err != nil {
		t.Fatal(err)
	}
	claimed["service_account_id"] = f.sa

	cases := []struct {
		name    string
		keyJSON []byte
		wantErr error
	}{
		{"genuine key", genuine, nil},
		{"other private key under the same key id", forgedKey, kms.ErrAccessDenied},
		{"key of another service account claiming ours", mustJSON(t, claimed), kms.ErrAccessDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.emu.ResetCounters()
			c := newClient(t, credential(t, f.emu, tc.keyJSON), key, testOptions())
			res, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: make([]byte, 32), Context: []byte("c")}, {DEK: make([]byte, 32), Context: []byte("d")}})
			if tc.wantErr == nil {
				if err != nil || res[0].Err != nil || res[1].Err != nil {
					t.Fatalf("Wrap(genuine key) = %v, %v", res, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || res != nil {
				t.Fatalf("Wrap = %v, err %v; want whole-call %v", res, err, tc.wantErr)
			}
			if n := f.emu.Calls(iamCreate); n != 1 {
				t.Fatalf("IAM Create calls = %d, want 1 (the rejected exchange)", n)
			}
			if n := f.emu.Calls(encryptMethod); n != 0 {
				t.Fatalf("Encrypt calls = %d, want 0 without an IAM token", n)
			}
		})
	}
}

func TestRevocationAndKeyState(t *testing.T) {
	f := newFixture(t)
	key := newKey(t, f.emu, f.sa)
	c := f.client(t, key)
	ctx := context.Background()
	w, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: make([]byte, 32), Context: []byte("scope")}})
	if err != nil || w[0].Err != nil {
		t.Fatalf("Wrap err = %v / %v", err, w)
	}
	unwrap := func() error {
		res, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: w[0].WrappedDEK, Context: []byte("scope")}})
		if err != nil {
			return err
		}
		return res[0].Err
	}

	if err := f.emu.Revoke(f.sa, key); err != nil {
		t.Fatal(err)
	}
	if err := unwrap(); !errors.Is(err, kms.ErrAccessDenied) || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("Unwrap after revoke err = %v, want ErrAccessDenied (PermissionDenied)", err)
	}
	if _, err := c.Describe(ctx); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Describe after revoke err = %v, want ErrAccessDenied", err)
	}

	if err := f.emu.Grant(f.sa, key); err != nil {
		t.Fatal(err)
	}
	if err := unwrap(); err != nil {
		t.Fatalf("Unwrap after re-grant err = %v", err)
	}

	if err := f.emu.SetKeyState(key, yandexemu.KeyInactive); err != nil {
		t.Fatal(err)
	}
	if err := unwrap(); !errors.Is(err, kms.ErrAccessDenied) || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Fatalf("Unwrap of inactive key err = %v, want ErrAccessDenied (FailedPrecondition)", err)
	}
	if _, err := c.Describe(ctx); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Describe(inactive key) err = %v, want ErrAccessDenied", err)
	}
}

func TestKeyVersions(t *testing.T) {
	f := newFixture(t)
	key := newKey(t, f.emu, f.sa)
	c := f.client(t, key)
	ctx := context.Background()
	wrap := func() kms.WrapResult {
		res, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: []byte("0123456789abcdef0123456789abcdef"), Context: []byte("s")}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("Wrap err = %v / %v", err, res)
		}
		return res[0]
	}
	old := wrap()
	if old.KEKVersion != key+"-v1" {
		t.Fatalf("KEKVersion = %q, want %q (the version id Yandex returns)", old.KEKVersion, key+"-v1")
	}
	v2, err := f.emu.RotateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := wrap().KEKVersion; got != v2 {
		t.Fatalf("KEKVersion after rotation = %q, want %q", got, v2)
	}
	info, err := c.Describe(ctx)
	if err != nil || info.LatestVersion != v2 {
		t.Fatalf("Describe = %+v, %v; want latest version %q", info, err, v2)
	}
	res, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: old.WrappedDEK, Context: []byte("s")}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("Unwrap(old version) err = %v / %v", err, res)
	}
	// A wrapped DEK of another key does not open under this one.
	otherKey := newKey(t, f.emu, f.sa)
	res, err = f.client(t, otherKey).Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: old.WrappedDEK, Context: []byte("s")}})
	if err != nil || !errors.Is(res[0].Err, kms.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap(other key's DEK) = %v / %v, want ErrInvalidCiphertext", err, res)
	}
}

func TestUnavailableInjected(t *testing.T) {
	f := newFixture(t)
	key := newKey(t, f.emu, f.sa)
	c := f.client(t, key)
	ctx := context.Background()
	reqs := []kms.WrapRequest{{DEK: make([]byte, 32), Context: []byte("a")}, {DEK: make([]byte, 32), Context: []byte("b")}}
	if _, err := c.Wrap(ctx, reqs); err != nil {
		t.Fatal(err)
	}

	f.emu.SetUnavailable(true)
	// The client holds an IAM token: the KMS call itself fails.
	if res, err := c.Wrap(ctx, reqs); !errors.Is(err, kms.ErrUnavailable) || !kms.Retryable(err) || res != nil {
		t.Fatalf("Wrap(unavailable KMS) = %v, %v; want whole-call retryable ErrUnavailable", res, err)
	}
	// A new client cannot even get a token: still unavailable, not "access denied".
	fresh := f.client(t, key)
	if _, err := fresh.Wrap(ctx, reqs); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Wrap(unavailable IAM) err = %v, want ErrUnavailable", err)
	}
	if _, err := fresh.Describe(ctx); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Describe(unavailable IAM) err = %v, want ErrUnavailable", err)
	}

	f.emu.SetUnavailable(false)
	if res, err := fresh.Wrap(ctx, reqs); err != nil || res[0].Err != nil {
		t.Fatalf("Wrap after recovery = %v, %v", res, err)
	}
}

func TestSlowKMSTimesOut(t *testing.T) {
	f := newFixture(t)
	opts := testOptions()
	opts.CallTimeout = 300 * time.Millisecond
	c := newClient(t, f.cred, newKey(t, f.emu, f.sa), opts)
	if _, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: make([]byte, 32)}}); err != nil {
		t.Fatal(err)
	}
	f.emu.SetLatency(5 * time.Second)
	start := time.Now()
	_, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: make([]byte, 32)}})
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Wrap(slow KMS) err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Wrap(slow KMS) took %v, want about CallTimeout", d)
	}
}

func TestTokenCachedAndRefreshed(t *testing.T) {
	f := newFixture(t)
	f.emu.SetTokenTTL(2 * time.Second) // refreshed after half its life
	c := f.client(t, newKey(t, f.emu, f.sa))
	ctx := context.Background()
	wrap := func() {
		t.Helper()
		res, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: make([]byte, 32)}, {DEK: make([]byte, 32)}, {DEK: make([]byte, 32)}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("Wrap = %v, %v", res, err)
		}
	}
	wrap()
	wrap()
	if _, err := c.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.emu.Calls(iamCreate); n != 1 {
		t.Fatalf("IAM Create calls = %d, want 1 (token cached)", n)
	}
	time.Sleep(1100 * time.Millisecond)
	wrap()
	if n := f.emu.Calls(iamCreate); n != 2 {
		t.Fatalf("IAM Create calls = %d, want 2 (token refreshed at half life)", n)
	}
	if n := f.emu.Calls(endpointpb.ApiEndpointService_List_FullMethodName); n != 0 {
		t.Fatalf("endpoint discovery calls = %d, want 0 with an endpoint override", n)
	}
}

func TestClosed(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, newKey(t, f.emu, f.sa))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close err = %v", err)
	}
	if _, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: make([]byte, 32)}}); err == nil {
		t.Fatal("Wrap after Close err = nil")
	}
}
