package audit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
)

// rotateKeyFile adds version 2 of kekID and makes it the primary.
func rotateKeyFile(t *testing.T, path, kekID string) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	if err := local.Update(path, func(f *local.File) {
		f.Keys[kekID].Versions["2"] = base64.StdEncoding.EncodeToString(raw)
		f.Keys[kekID].Primary = "2"
	}); err != nil {
		t.Fatal(err)
	}
}

// plainKMS hides every method but kms.KMS's: a provider that cannot rewrap.
type plainKMS struct{ kms.KMS }

// countingRewrapper counts the Rewrap calls that reach the provider.
type countingRewrapper struct {
	*local.Client
	calls int
}

func (c *countingRewrapper) Rewrap(ctx context.Context, reqs []kms.RewrapRequest) ([]kms.RewrapResult, error) {
	c.calls++
	return c.Client.Rewrap(ctx, reqs)
}

func TestRewrapIsRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	k := Wrap(local.New(path, "kek-acme"), "acme", log, Access{ActorService: "encryptor", Purpose: "encrypt"})
	wrapped, err := k.Wrap(context.Background(), wrapReqs("general", "random"))
	if err != nil {
		t.Fatal(err)
	}
	rotateKeyFile(t, path, "kek-acme")
	ctx := WithAccess(context.Background(), Access{ActorService: "byokctl", ActorUser: "sec-team", Purpose: "rewrap"})
	res, err := k.Rewrap(ctx, []kms.RewrapRequest{
		{WrappedDEK: wrapped[0].WrappedDEK, Context: wrapReqs("general")[0].Context},
		{WrappedDEK: wrapped[1].WrappedDEK, Context: wrapReqs("random")[0].Context},
		{WrappedDEK: wrapped[1].WrappedDEK, Context: wrapReqs("moved")[0].Context},
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("Rewrap = %d results, %v", len(res), err)
	}
	if res[0].Err != nil || res[0].KEKVersion != "2" || res[1].Err != nil || !errors.Is(res[2].Err, kms.ErrInvalidCiphertext) {
		t.Fatalf("Rewrap results = %+v, want two at version 2 and one invalid ciphertext", res)
	}
	evs := sink.all()
	if len(evs) != 2 {
		t.Fatalf("recorded %d events, want 2 (wrap, rewrap)", len(evs))
	}
	e := evs[1]
	if e.Operation != OpRewrap || e.TenantId != "acme" || e.Provider != "local" || e.KekId != "kek-acme" || e.KekVersion != "2" ||
		e.DekCount != 3 || len(e.Scopes) != 3 || e.Scopes[0].ChatId != "general" || e.Scopes[2].ChatId != "moved" ||
		e.ActorService != "byokctl" || e.ActorUser != "sec-team" || e.Purpose != "rewrap" ||
		e.Result != ResultError || e.ErrorCode != "invalid_ciphertext" || e.FailedItems != 1 {
		t.Fatalf("rewrap event = %v", e)
	}
	if r := Verify(evs); len(r) != 1 || r[0].Problem != "" {
		t.Fatalf("Verify = %+v, want one intact chain", r)
	}
}

func TestRewrapFailsClosedWhenNotRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	inner := &countingRewrapper{Client: local.New(path, "kek-acme")}
	k := Wrap(inner, "acme", log, Access{ActorService: "byokctl", Purpose: "rewrap"})
	wrapped, err := k.Wrap(context.Background(), wrapReqs("general"))
	if err != nil {
		t.Fatal(err)
	}
	sink.fail = true
	res, err := k.Rewrap(context.Background(), []kms.RewrapRequest{{WrappedDEK: wrapped[0].WrappedDEK, Context: wrapReqs("general")[0].Context}})
	if res != nil || !errors.Is(err, ErrNotRecorded) || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Rewrap with audit down = %v, %v; want no results and ErrNotRecorded/ErrUnavailable", res, err)
	}
	if inner.calls != 1 {
		t.Fatalf("provider Rewrap calls = %d, want 1 (the call happened, its result was withheld)", inner.calls)
	}
}

func TestRewrapNotSupported(t *testing.T) {
	path, sink, log := fixture(t)
	k := Wrap(plainKMS{local.New(path, "kek-acme")}, "acme", log, Access{ActorService: "byokctl", Purpose: "rewrap"})
	res, err := k.Rewrap(context.Background(), []kms.RewrapRequest{{WrappedDEK: []byte("x"), Context: wrapReqs("general")[0].Context}})
	if res != nil || !errors.Is(err, kms.ErrNotSupported) || kms.Retryable(err) {
		t.Fatalf("Rewrap(provider without rewrap) = %v, %v; want kms.ErrNotSupported, not retryable", res, err)
	}
	if n := len(sink.all()); n != 0 {
		t.Fatalf("recorded %d events for a call that never reached the KMS, want 0", n)
	}
}
