package cloudru_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/cloudru"
	"github.com/byok-io/byok/pkg/kms/cloudru/cloudruemu"
	"github.com/byok-io/byok/pkg/kms/kmstest"
)

func newEmu(t *testing.T) *cloudruemu.Server {
	t.Helper()
	emu, err := cloudruemu.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

func newClient(t *testing.T, emu *cloudruemu.Server, keyID, secret, kek string, opts cloudru.Options) *cloudru.Client {
	t.Helper()
	c, err := cloudru.New(cloudru.Credential{KeyID: keyID, Secret: secret, KMSEndpoint: emu.URL(), IAMEndpoint: emu.URL()}, kek, opts)
	if err != nil {
		t.Fatalf("cloudru.New err = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// usable returns a client for a fresh active key that its access key may use.
func usable(t *testing.T, emu *cloudruemu.Server, opts cloudru.Options) (*cloudru.Client, string) {
	kek := emu.CreateKey()
	id, secret := emu.NewAccessKey()
	emu.Grant(id, kek)
	return newClient(t, emu, id, secret, kek, opts), kek
}

func TestConformance(t *testing.T) {
	emu := newEmu(t)
	newOK := func(t *testing.T) kms.KMS { c, _ := usable(t, emu, cloudru.Options{}); return c }
	unknownKey := func(t *testing.T) kms.KMS {
		id, secret := emu.NewAccessKey()
		return newClient(t, emu, id, secret, "kek-does-not-exist", cloudru.Options{})
	}

	t.Run("revoked+closed", func(t *testing.T) {
		kmstest.Run(t, kmstest.Harness{
			New: newOK,
			Denied: func(t *testing.T) kms.KMS {
				kek := emu.CreateKey()
				id, secret := emu.NewAccessKey()
				emu.Grant(id, kek)
				emu.Revoke(id, kek)
				return newClient(t, emu, id, secret, kek, cloudru.Options{})
			},
			Unavailable: func(t *testing.T) kms.KMS {
				dead := newEmu(t)
				c, _ := usable(t, dead, cloudru.Options{})
				_ = dead.Close()
				return c
			},
			UnknownKey: unknownKey,
		})
	})

	t.Run("disabled+503", func(t *testing.T) {
		kmstest.Run(t, kmstest.Harness{
			New: newOK,
			Denied: func(t *testing.T) kms.KMS {
				c, kek := usable(t, emu, cloudru.Options{})
				emu.SetKeyDisabled(kek, true)
				return c
			},
			Unavailable: func(t *testing.T) kms.KMS {
				down := newEmu(t)
				c, _ := usable(t, down, cloudru.Options{})
				down.SetUnavailable(true)
				return c
			},
			UnknownKey: unknownKey,
		})
	})
}

const canary = "canary-SECRET-7f3a9c"

func TestParseCredential(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		ok        bool
		kms, iam  string
	}{
		{"defaults", `{"key_id":"ak-1","secret":"` + canary + `"}`, true, cloudru.DefaultKMSEndpoint, cloudru.DefaultIAMEndpoint},
		{"private installation", `{"key_id":"ak-1","secret":"` + canary + `","kms_endpoint":"https://kms.corp.example:8443","iam_endpoint":"https://iam.corp.example"}`, true, "https://kms.corp.example:8443", "https://iam.corp.example"},
		{"loopback http", `{"key_id":"ak-1","secret":"` + canary + `","kms_endpoint":"http://127.0.0.1:9","iam_endpoint":"http://localhost:9"}`, true, "http://127.0.0.1:9", "http://localhost:9"},
		{"not json", `key_id=ak-1 secret=` + canary, false, "", ""},
		{"empty object", `{}`, false, "", ""},
		{"no secret", `{"key_id":"ak-1"}`, false, "", ""},
		{"no key id", `{"secret":"` + canary + `"}`, false, "", ""},
		{"unknown field", `{"key_id":"ak-1","secret":"` + canary + `","token":"` + canary + `"}`, false, "", ""},
		{"secret of wrong type", `{"key_id":"ak-1","secret":["` + canary + `"]}`, false, "", ""},
		{"trailing data", `{"key_id":"ak-1","secret":"` + canary + `"} {"x":"` + canary + `"}`, false, "", ""},
		{"plain http off loopback", `{"key_id":"ak-1","secret":"` + canary + `","kms_endpoint":"http://kms.corp.example"}`, false, "", ""},
		{"bad scheme", `{"key_id":"ak-1","secret":"` + canary + `","iam_endpoint":"ftp://iam.corp.example"}`, false, "", ""},
		{"userinfo in endpoint", `{"key_id":"ak-1","secret":"` + canary + `","iam_endpoint":"https://u:` + canary + `@iam.corp.example"}`, false, "", ""},
		{"relative endpoint", `{"key_id":"ak-1","secret":"` + canary + `","kms_endpoint":"kms.api.cloud.ru"}`, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cloudru.ParseCredential([]byte(tc.raw))
			if tc.ok != (err == nil) {
				t.Fatalf("ParseCredential err = %v, want ok=%t", err, tc.ok)
			}
			if err != nil {
				if strings.Contains(err.Error(), canary) {
					t.Fatalf("ParseCredential err = %q quotes the secret", err)
				}
				return
			}
			if c.KeyID != "ak-1" || c.Secret != canary || c.KMSEndpoint != tc.kms || c.IAMEndpoint != tc.iam {
				t.Fatalf("ParseCredential = {key_id %q kms %q iam %q}, want {ak-1 %q %q}", c.KeyID, c.KMSEndpoint, c.IAMEndpoint, tc.kms, tc.iam)
			}
			for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
				if s := fmt.Sprintf(f, c); strings.Contains(s, canary) || !strings.Contains(s, "ak-1") {
					t.Fatalf("Sprintf(%s, credential) = %q: must name the key id and hide the secret", f, s)
				}
			}
			client, err := cloudru.New(c, "kek-1", cloudru.Options{})
			if err != nil {
				t.Fatalf("New(parsed credential) err = %v", err)
			}
			for _, f := range []string{"%v", "%+v", "%s"} {
				if s := fmt.Sprintf(f, client); strings.Contains(s, canary) {
					t.Fatalf("Sprintf(%s, client) = %q prints the secret", f, s)
				}
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := cloudru.Credential{KeyID: "ak-1", Secret: canary}
	for _, tc := range []struct {
		name string
		cred cloudru.Credential
		kek  string
		opts cloudru.Options
	}{
		{"no kek", good, "", cloudru.Options{}},
		{"no secret", cloudru.Credential{KeyID: "ak-1"}, "kek", cloudru.Options{}},
		{"negative concurrency", good, "kek", cloudru.Options{Concurrency: -1}},
		{"negative timeout", good, "kek", cloudru.Options{Timeout: -time.Second}},
		{"http endpoint", cloudru.Credential{KeyID: "ak-1", Secret: canary, KMSEndpoint: "http://kms.example"}, "kek", cloudru.Options{}},
	} {
		if _, err := cloudru.New(tc.cred, tc.kek, tc.opts); err == nil || strings.Contains(err.Error(), canary) {
			t.Errorf("New(%s) err = %v, want an error without the secret", tc.name, err)
		}
	}
}

func randomDEK(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wrapOne(t *testing.T, c kms.KMS, dek, aad []byte) kms.WrapResult {
	t.Helper()
	res, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: dek, Context: aad}})
	if err != nil {
		t.Fatalf("Wrap err = %v", err)
	}
	return res[0]
}

func TestTokenCachedAndRefreshedBeforeExpiry(t *testing.T) {
	emu := newEmu(t)
	emu.SetTokenTTL(time.Second) // the client replaces it after 0.8 s (a fifth before expiry)
	c, _ := usable(t, emu, cloudru.Options{})
	for i := range 3 {
		if r := wrapOne(t, c, randomDEK(t), []byte("ctx")); r.Err != nil {
			t.Fatalf("Wrap %d err = %v", i, r.Err)
		}
	}
	if s := emu.Stats(); s.TokenCalls != 1 || s.EncryptCalls != 3 {
		t.Fatalf("after 3 wraps: %d token calls, %d encrypt calls; want 1 and 3 (token cached)", s.TokenCalls, s.EncryptCalls)
	}
	time.Sleep(900 * time.Millisecond)
	if r := wrapOne(t, c, randomDEK(t), []byte("ctx")); r.Err != nil {
		t.Fatalf("Wrap after refresh point err = %v", r.Err)
	}
	if s := emu.Stats(); s.TokenCalls != 2 || s.EncryptCalls != 4 {
		t.Fatalf("after the refresh point: %d token calls, %d encrypt calls; want 2 and 4 (refreshed before expiry, no 401 round trip)", s.TokenCalls, s.EncryptCalls)
	}
}

func TestTokenRefreshedOnceOn401(t *testing.T) {
	emu := newEmu(t)
	c, _ := usable(t, emu, cloudru.Options{Concurrency: 8})
	if r := wrapOne(t, c, randomDEK(t), nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	emu.ExpireTokens() // the client still believes its token is good for an hour
	emu.ResetStats()

	reqs := make([]kms.WrapRequest, 32)
	for i := range reqs {
		reqs[i] = kms.WrapRequest{DEK: randomDEK(t), Context: []byte(fmt.Sprint("ctx-", i))}
	}
	res, err := c.Wrap(context.Background(), reqs)
	if err != nil {
		t.Fatalf("Wrap after server-side expiry err = %v", err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("Wrap item %d err = %v, want success after one refresh", i, r.Err)
		}
	}
	s := emu.Stats()
	if s.TokenCalls != 1 {
		t.Fatalf("%d token calls for 32 concurrent 401s, want exactly 1 shared refresh", s.TokenCalls)
	}
	if s.EncryptCalls < 33 || s.EncryptCalls > 32+8 {
		t.Fatalf("%d encrypt calls, want 32 plus one rejected call per worker that held the old token (1..8)", s.EncryptCalls)
	}
}

func TestPersistent401IsDeniedAfterOneRetry(t *testing.T) {
	emu := newEmu(t)
	emu.SetTokenTTL(0) // every token is expired by the time it is used
	c, _ := usable(t, emu, cloudru.Options{})
	r := wrapOne(t, c, randomDEK(t), nil)
	if !errors.Is(r.Err, kms.ErrAccessDenied) || kms.Retryable(r.Err) {
		t.Fatalf("Wrap with always-rejected tokens err = %v, want non-retryable ErrAccessDenied", r.Err)
	}
	if s := emu.Stats(); s.TokenCalls != 2 || s.EncryptCalls != 2 {
		t.Fatalf("%d token calls, %d encrypt calls; want 2 and 2 (one refresh, one retry)", s.TokenCalls, s.EncryptCalls)
	}
}

func TestWrongSecretIsDenied(t *testing.T) {
	emu := newEmu(t)
	kek := emu.CreateKey()
	id, _ := emu.NewAccessKey()
	emu.Grant(id, kek)
	c := newClient(t, emu, id, canary, kek, cloudru.Options{})

	_, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: randomDEK(t), Context: []byte("ctx")}})
	if !errors.Is(err, kms.ErrAccessDenied) || kms.Retryable(err) {
		t.Fatalf("Wrap(wrong secret) err = %v, want non-retryable ErrAccessDenied for the whole call", err)
	}
	if strings.Contains(err.Error(), canary) {
		t.Fatalf("Wrap(wrong secret) err = %q quotes the secret", err)
	}
	if _, err := c.Describe(context.Background()); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Describe(wrong secret) err = %v, want ErrAccessDenied", err)
	}
	if s := emu.Stats(); s.EncryptCalls != 0 || s.KeyCalls != 0 {
		t.Fatalf("%d encrypt and %d key calls without a token, want none", s.EncryptCalls, s.KeyCalls)
	}
}

func TestLimitsRejectedWithoutACall(t *testing.T) {
	emu := newEmu(t)
	c, _ := usable(t, emu, cloudru.Options{})
	ctx := context.Background()

	res, err := c.Wrap(ctx, []kms.WrapRequest{
		{DEK: make([]byte, cloudru.MaxPlaintext+1), Context: []byte("ctx")},
		{DEK: randomDEK(t), Context: make([]byte, cloudru.MaxAAD+1)},
		{DEK: nil, Context: []byte("ctx")},
	})
	if err != nil {
		t.Fatalf("Wrap(over limits) call err = %v, want per-item errors", err)
	}
	for i, r := range res {
		if r.Err == nil || kms.Retryable(r.Err) {
			t.Fatalf("Wrap(over limits) item %d err = %v, want a non-retryable error", i, r.Err)
		}
	}
	ures, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: []byte("AAAA"), Context: make([]byte, cloudru.MaxAAD+1)}, {WrappedDEK: nil}})
	if err != nil || !errors.Is(ures[0].Err, kms.ErrInvalidCiphertext) || !errors.Is(ures[1].Err, kms.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap(over limits) = %v / %+v, want ErrInvalidCiphertext per item", err, ures)
	}
	if s := emu.Stats(); s != (cloudruemu.Stats{}) {
		t.Fatalf("calls made for requests over the limits: %+v, want none at all", s)
	}

	// Exactly at the limits is fine, and mixed batches keep the good items.
	big := make([]byte, cloudru.MaxPlaintext)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	aad := bytes.Repeat([]byte("a"), cloudru.MaxAAD)
	res, err = c.Wrap(ctx, []kms.WrapRequest{{DEK: big, Context: aad}, {DEK: make([]byte, cloudru.MaxPlaintext+1)}})
	if err != nil || res[0].Err != nil || res[1].Err == nil {
		t.Fatalf("Wrap(at limit, over limit) = %v, %v / %v; want ok then error", err, res[0].Err, res[1].Err)
	}
	ures, err = c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: res[0].WrappedDEK, Context: aad}})
	if err != nil || ures[0].Err != nil || !bytes.Equal(ures[0].DEK, big) {
		t.Fatalf("Unwrap(at limit) err = %v / %v, round trip = %t", err, ures[0].Err, bytes.Equal(ures[0].DEK, big))
	}
	if s := emu.Stats(); s.EncryptCalls != 1 || s.DecryptCalls != 1 {
		t.Fatalf("%d encrypt and %d decrypt calls, want 1 and 1", s.EncryptCalls, s.DecryptCalls)
	}
}

func TestConcurrencyBound(t *testing.T) {
	for _, tc := range []struct {
		opt, want, n int
	}{{4, 4, 40}, {0, cloudru.DefaultConcurrency, 80}, {1, 1, 5}} {
		t.Run(fmt.Sprint("concurrency=", tc.opt), func(t *testing.T) {
			emu := newEmu(t)
			c, _ := usable(t, emu, cloudru.Options{Concurrency: tc.opt})
			emu.SetLatency(25 * time.Millisecond)
			reqs := make([]kms.WrapRequest, tc.n)
			for i := range reqs {
				reqs[i] = kms.WrapRequest{DEK: randomDEK(t), Context: []byte(fmt.Sprint("ctx-", i))}
			}
			res, err := c.Wrap(context.Background(), reqs)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Err != nil {
					t.Fatalf("item %d err = %v", i, r.Err)
				}
			}
			s := emu.Stats()
			if s.MaxInFlight > tc.want {
				t.Fatalf("max in flight %d, bound %d", s.MaxInFlight, tc.want)
			}
			if tc.want > 1 && s.MaxInFlight < 2 {
				t.Fatalf("max in flight %d: a batch of %d with bound %d ran sequentially", s.MaxInFlight, tc.n, tc.want)
			}
			if s.EncryptCalls != tc.n {
				t.Fatalf("%d encrypt calls for %d items", s.EncryptCalls, tc.n)
			}
		})
	}
}

func TestKEKVersions(t *testing.T) {
	emu := newEmu(t)
	c, kek := usable(t, emu, cloudru.Options{})
	ctx := context.Background()
	dek1 := randomDEK(t)
	w1 := wrapOne(t, c, dek1, []byte("scope"))
	if w1.Err != nil || w1.KEKVersion != "1" {
		t.Fatalf("Wrap = version %q err %v, want version 1", w1.KEKVersion, w1.Err)
	}
	if v := emu.RotateKey(kek); v != 2 {
		t.Fatalf("RotateKey = %d", v)
	}
	w2 := wrapOne(t, c, randomDEK(t), []byte("scope"))
	if w2.Err != nil || w2.KEKVersion != "2" {
		t.Fatalf("Wrap after rotation = version %q err %v, want version 2", w2.KEKVersion, w2.Err)
	}
	if info, err := c.Describe(ctx); err != nil || info.LatestVersion != "2" {
		t.Fatalf("Describe after rotation = %+v, %v; want latest version 2", info, err)
	}
	res, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: w1.WrappedDEK, Context: []byte("scope")}})
	if err != nil || res[0].Err != nil || !bytes.Equal(res[0].DEK, dek1) {
		t.Fatalf("Unwrap(version 1 DEK after rotation) err = %v / %v", err, res[0].Err)
	}

	pinned := newClientFor(t, emu, kek, cloudru.Options{KeyVersionID: "1"})
	if w := wrapOne(t, pinned, randomDEK(t), nil); w.Err != nil || w.KEKVersion != "1" {
		t.Fatalf("Wrap(pinned to 1) = version %q err %v", w.KEKVersion, w.Err)
	}
	missing := newClientFor(t, emu, kek, cloudru.Options{KeyVersionID: "9"})
	if w := wrapOne(t, missing, randomDEK(t), nil); !errors.Is(w.Err, kms.ErrKeyNotFound) {
		t.Fatalf("Wrap(pinned to a missing version) err = %v, want ErrKeyNotFound", w.Err)
	}
}

func newClientFor(t *testing.T, emu *cloudruemu.Server, kek string, opts cloudru.Options) *cloudru.Client {
	id, secret := emu.NewAccessKey()
	emu.Grant(id, kek)
	return newClient(t, emu, id, secret, kek, opts)
}

func TestDisabledKey(t *testing.T) {
	emu := newEmu(t)
	c, kek := usable(t, emu, cloudru.Options{})
	dek := randomDEK(t)
	w := wrapOne(t, c, dek, []byte("scope"))
	if w.Err != nil {
		t.Fatal(w.Err)
	}
	emu.SetKeyDisabled(kek, true)
	if _, err := c.Describe(context.Background()); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Describe(disabled key) err = %v, want ErrAccessDenied", err)
	}
	res, err := c.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: w.WrappedDEK, Context: []byte("scope")}})
	if e := firstErr(err, res); !errors.Is(e, kms.ErrAccessDenied) || errors.Is(e, kms.ErrInvalidCiphertext) {
		t.Fatalf("Unwrap(disabled key) err = %v, want ErrAccessDenied (not invalid ciphertext)", e)
	}
	emu.SetKeyDisabled(kek, false)
	res, err = c.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: w.WrappedDEK, Context: []byte("scope")}})
	if e := firstErr(err, res); e != nil || !bytes.Equal(res[0].DEK, dek) {
		t.Fatalf("Unwrap(re-enabled key) err = %v", e)
	}
}

func firstErr(err error, res []kms.UnwrapResult) error {
	if err != nil {
		return err
	}
	return res[0].Err
}

func TestUnavailableIsNotRetriedByTheClient(t *testing.T) {
	emu := newEmu(t)
	c, _ := usable(t, emu, cloudru.Options{})
	if w := wrapOne(t, c, randomDEK(t), nil); w.Err != nil {
		t.Fatal(w.Err)
	}
	emu.SetUnavailable(true)
	emu.ResetStats()
	start := time.Now()
	w := wrapOne(t, c, randomDEK(t), nil)
	if !errors.Is(w.Err, kms.ErrUnavailable) || !kms.Retryable(w.Err) {
		t.Fatalf("Wrap(503) err = %v, want retryable ErrUnavailable", w.Err)
	}
	if s := emu.Stats(); s.EncryptCalls != 1 || s.TokenCalls != 0 {
		t.Fatalf("Wrap(503): %d encrypt, %d token calls; want exactly 1 and 0 (no retry inside the provider)", s.EncryptCalls, s.TokenCalls)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Wrap(503) took %v", d)
	}
}

func TestTimeoutIsUnavailable(t *testing.T) {
	emu := newEmu(t)
	c, _ := usable(t, emu, cloudru.Options{Timeout: 300 * time.Millisecond})
	emu.SetLatency(5 * time.Second)
	start := time.Now()
	_, err := c.Wrap(context.Background(), []kms.WrapRequest{{DEK: randomDEK(t)}})
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Wrap(slow KMS) err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Wrap(slow KMS) took %v with a 300ms timeout", d)
	}
}

// TestNoSecretsInErrors collects the errors of every failure path and checks that none quotes the
// secret, a DEK or a scope context.
func TestNoSecretsInErrors(t *testing.T) {
	emu := newEmu(t)
	kek := emu.CreateKey()
	id, secret := emu.NewAccessKey()
	emu.Grant(id, kek)
	dek := randomDEK(t)
	scope := []byte("tenant-secretive|chat-42")
	ctx := context.Background()
	var errs []error
	collect := func(c kms.KMS) {
		res, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: dek, Context: scope}, {DEK: append(bytes.Clone(dek), make([]byte, cloudru.MaxPlaintext)...), Context: scope}})
		errs = append(errs, err)
		for _, r := range res {
			errs = append(errs, r.Err)
		}
		ures, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: []byte(base64.StdEncoding.EncodeToString(dek)), Context: scope}})
		errs = append(errs, err)
		for _, r := range ures {
			errs = append(errs, r.Err)
		}
		_, err = c.Describe(ctx)
		errs = append(errs, err)
	}
	collect(newClient(t, emu, id, secret+"x", kek, cloudru.Options{})) // wrong secret
	collect(newClient(t, emu, id, secret, kek, cloudru.Options{}))     // works; bad ciphertext
	emu.Revoke(id, kek)
	collect(newClient(t, emu, id, secret, kek, cloudru.Options{})) // denied
	emu.SetUnavailable(true)
	collect(newClient(t, emu, id, secret, kek, cloudru.Options{})) // unavailable

	forbidden := []string{secret, hex.EncodeToString(dek), base64.StdEncoding.EncodeToString(dek), string(scope), base64.StdEncoding.EncodeToString(scope)}
	n := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		n++
		for _, f := range forbidden {
			if strings.Contains(err.Error(), f) {
				t.Errorf("error %q contains a secret value", err)
			}
		}
	}
	if n < 12 {
		t.Fatalf("only %d errors collected; the failure paths did not fail", n)
	}
}

func TestCancelledContextMidBatch(t *testing.T) {
	emu := newEmu(t)
	c, _ := usable(t, emu, cloudru.Options{Concurrency: 2})
	if w := wrapOne(t, c, randomDEK(t), nil); w.Err != nil { // warm the token
		t.Fatal(w.Err)
	}
	emu.SetLatency(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	reqs := make([]kms.WrapRequest, 20)
	for i := range reqs {
		reqs[i] = kms.WrapRequest{DEK: randomDEK(t)}
	}
	start := time.Now()
	res, err := c.Wrap(ctx, reqs)
	if err != nil {
		t.Fatalf("Wrap call err = %v, want per-item results (some items were sent)", err)
	}
	ok, failed := 0, 0
	for _, r := range res {
		switch {
		case r.Err == nil:
			ok++
		case errors.Is(r.Err, kms.ErrUnavailable) && errors.Is(r.Err, context.DeadlineExceeded):
			failed++
		default:
			t.Fatalf("item err = %v, want nil or ErrUnavailable wrapping the deadline", r.Err)
		}
	}
	if ok == 0 || failed == 0 || time.Since(start) > 2*time.Second {
		t.Fatalf("%d ok, %d failed in %v; want some of each, promptly", ok, failed, time.Since(start))
	}
}
