package rotate_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/rotate"
)

// checkRewrapped asserts every result moved from version from to version to, replaced only the
// key reference, and opens to the original body.
func checkRewrapped(t *testing.T, r tenants, ms []message, res []rotate.Result, from, to string) [][]byte {
	t.Helper()
	if len(res) != len(ms) {
		t.Fatalf("Rewrap returned %d results for %d envelopes", len(res), len(ms))
	}
	out := make([][]byte, len(res))
	for i, rr := range res {
		if rr.Err != nil || rr.Current || rr.FromVersion != from || rr.ToVersion != to {
			t.Fatalf("Rewrap result %d = {Current %v, %q→%q, Err %v}, want %q→%q", i, rr.Current, rr.FromVersion, rr.ToVersion, rr.Err, from, to)
		}
		old, nu := parse(t, ms[i].envelope), parse(t, rr.Envelope)
		if nu.Key.KEKVersion != to || nu.Key.Provider != old.Key.Provider || nu.Key.KEKID != old.Key.KEKID || nu.Scope != old.Scope {
			t.Fatalf("rewrapped envelope %d key %+v scope %v, want version %s and the old KEK and scope", i, nu.Key, nu.Scope, to)
		}
		if bytes.Equal(nu.Key.WrappedDEK, old.Key.WrappedDEK) {
			t.Fatalf("rewrapped envelope %d kept its old wrapped DEK", i)
		}
		if !bytes.Equal(body(t, rr.Envelope), body(t, ms[i].envelope)) {
			t.Fatalf("rewrapped envelope %d: nonce and body ciphertext changed", i)
		}
		out[i] = rr.Envelope
	}
	bodies, errs := open(r, ids(ms), out)
	for i := range ms {
		if errs[i] != nil || !bytes.Equal(bodies[i], ms[i].body) {
			t.Fatalf("open(rewrapped %d) err = %v, body matches = %v", i, errs[i], bytes.Equal(bodies[i], ms[i].body))
		}
	}
	return out
}

func TestRewrapInKMSReplacesOnlyTheKeyReference(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	r := tenants{"acme": acme.kms}
	ms := seal(t, r, "acme", []string{"general", "random", "ops"}, 2)
	acme.rotate(t, "2")
	sink.reset()

	res, err := rotate.Rewrap(context.Background(), acme.kms, "acme", envelopes(ms), rotate.Options{})
	if err != nil {
		t.Fatalf("Rewrap err = %v", err)
	}
	calls, deks := sink.ops()
	// One describe, one rewrap of the 3 distinct DEKs (one per scope); nothing unwrapped.
	if calls[audit.OpDescribe] != 1 || calls[audit.OpRewrap] != 1 || deks[audit.OpRewrap] != 3 || calls[audit.OpUnwrap] != 0 || calls[audit.OpWrap] != 0 {
		t.Fatalf("audit calls %v, DEKs %v; want describe 1, rewrap 1 of 3 DEKs, no unwrap or wrap", calls, deks)
	}
	newEnvs := checkRewrapped(t, r, ms, res, "1", "2")

	// Retire version 1: the old envelopes no longer open, the rewrapped ones do.
	acme.retire(t, "1")
	_, errs := open(r, ids(ms), envelopes(ms))
	for i, err := range errs {
		if !errors.Is(err, kms.ErrInvalidCiphertext) {
			t.Fatalf("open(old envelope %d after retiring version 1) err = %v, want kms.ErrInvalidCiphertext", i, err)
		}
	}
	if _, errs := open(r, ids(ms), newEnvs); errs[0] != nil {
		t.Fatalf("open(rewrapped after retiring version 1) err = %v", errs[0])
	}
}

func TestRewrapUnwrapWrap(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	// A provider that cannot rewrap in place: unwrap-wrap still works.
	k := audit.Wrap(plainKMS{local.New(acme.path, acme.kekID)}, "acme", audit.NewLog(sink, "t"), audit.Access{ActorService: "t", Purpose: "rewrap"})
	r := tenants{"acme": k}
	ms := seal(t, r, "acme", []string{"general", "random"}, 3)
	acme.rotate(t, "2")
	sink.reset()

	if _, err := rotate.Rewrap(context.Background(), k, "acme", envelopes(ms), rotate.Options{}); !errors.Is(err, kms.ErrNotSupported) {
		t.Fatalf("Rewrap(in KMS, provider cannot) err = %v, want kms.ErrNotSupported", err)
	}
	sink.reset()
	res, err := rotate.Rewrap(context.Background(), k, "acme", envelopes(ms), rotate.Options{Method: rotate.MethodUnwrapWrap})
	if err != nil {
		t.Fatalf("Rewrap(unwrap-wrap) err = %v", err)
	}
	calls, deks := sink.ops()
	if calls[audit.OpUnwrap] != 1 || deks[audit.OpUnwrap] != 2 || calls[audit.OpWrap] != 1 || deks[audit.OpWrap] != 2 || calls[audit.OpRewrap] != 0 {
		t.Fatalf("audit calls %v, DEKs %v; want one unwrap and one wrap of 2 DEKs", calls, deks)
	}
	checkRewrapped(t, r, ms, res, "1", "2")

	// Without the audit wrapper there is no Rewrapper at all.
	if _, err := rotate.Rewrap(context.Background(), plainKMS{local.New(acme.path, acme.kekID)}, "acme", envelopes(ms), rotate.Options{}); !errors.Is(err, kms.ErrNotSupported) {
		t.Fatalf("Rewrap(in KMS, plain provider) err = %v, want kms.ErrNotSupported", err)
	}
}

func TestRewrapBatchesAndSkipsCurrent(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	r := tenants{"acme": acme.kms}
	old := seal(t, r, "acme", []string{"a", "b", "c", "d", "e"}, 2)
	acme.rotate(t, "2")
	current := seal(t, r, "acme", []string{"f"}, 2)
	sink.reset()

	all := append(append([]message(nil), old...), current...)
	res, err := rotate.Rewrap(context.Background(), acme.kms, "acme", envelopes(all), rotate.Options{MaxBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	calls, deks := sink.ops()
	if calls[audit.OpRewrap] != 3 || deks[audit.OpRewrap] != 5 {
		t.Fatalf("rewrap calls %d of %d DEKs, want 3 calls (batches of ≤2) of 5 DEKs", calls[audit.OpRewrap], deks[audit.OpRewrap])
	}
	checkRewrapped(t, r, old, res[:len(old)], "1", "2")
	for i, rr := range res[len(old):] {
		if !rr.Current || rr.Err != nil || !bytes.Equal(rr.Envelope, current[i].envelope) {
			t.Fatalf("result for an envelope already at version 2 = {Current %v, Err %v}, want it unchanged", rr.Current, rr.Err)
		}
	}
}

func TestRewrapPerItemErrors(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	other := newLocalTenant(t, "other", sink)
	r := tenants{"acme": acme.kms, "other": other.kms}
	ms := seal(t, r, "acme", []string{"general", "random"}, 1)
	foreign := seal(t, r, "other", []string{"general"}, 1)
	acme.rotate(t, "2")

	// An acme envelope whose wrapped DEK is corrupted, and one claiming another KEK.
	corrupt := parse(t, bytes.Clone(ms[1].envelope))
	corrupt.Key.WrappedDEK = bytes.Clone(corrupt.Key.WrappedDEK)
	corrupt.Key.WrappedDEK[len(corrupt.Key.WrappedDEK)-1] ^= 1
	otherKEK := parse(t, bytes.Clone(ms[1].envelope))
	otherKEK.Key.KEKID = "kek-from-before"

	in := [][]byte{ms[0].envelope, []byte("not an envelope"), foreign[0].envelope, corrupt.Marshal(), otherKEK.Marshal()}
	res, err := rotate.Rewrap(context.Background(), acme.kms, "acme", in, rotate.Options{})
	if err != nil {
		t.Fatalf("Rewrap err = %v, want per-item errors only", err)
	}
	want := []error{nil, envelope.ErrMalformed, rotate.ErrOtherTenant, kms.ErrInvalidCiphertext, rotate.ErrOtherKEK}
	for i, w := range want {
		if w == nil && (res[i].Err != nil || res[i].ToVersion != "2") || w != nil && (!errors.Is(res[i].Err, w) || res[i].Envelope != nil) {
			t.Errorf("result %d = {%q→%q, Err %v}, want error %v", i, res[i].FromVersion, res[i].ToVersion, res[i].Err, w)
		}
		if res[i].Err != nil && strings.Contains(res[i].Err.Error(), "secret body") {
			t.Errorf("result %d error carries a body: %v", i, res[i].Err)
		}
	}
}

func TestRewrapStopsWhenTheKMSFailsOrAuditIsDown(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	r := tenants{"acme": acme.kms}
	ms := seal(t, r, "acme", []string{"a", "b", "c"}, 1)
	acme.rotate(t, "2")

	// The audit topic is down: Describe's answer is not used, nothing is rewrapped.
	sink.fail = true
	if res, err := rotate.Rewrap(context.Background(), acme.kms, "acme", envelopes(ms), rotate.Options{}); res != nil || !errors.Is(err, audit.ErrNotRecorded) {
		t.Fatalf("Rewrap with audit down = %d results, %v; want none and audit.ErrNotRecorded", len(res), err)
	}
	sink.fail = false

	// The KMS fails as a whole on the second batch: the first batch's results stand, the rest
	// carry the error, and the run reports it.
	k := &failAfter{KMS: acme.kms, ok: 1}
	res, err := rotate.Rewrap(context.Background(), k, "acme", envelopes(ms), rotate.Options{MaxBatch: 1})
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Rewrap err = %v, want kms.ErrUnavailable", err)
	}
	if res[0].Err != nil || !errors.Is(res[1].Err, kms.ErrUnavailable) || !errors.Is(res[2].Err, kms.ErrUnavailable) {
		t.Fatalf("results errs = %v, %v, %v; want nil, unavailable, unavailable", res[0].Err, res[1].Err, res[2].Err)
	}
	if k.calls != 2 {
		t.Fatalf("Rewrap calls = %d, want 2 (no call after the failed one)", k.calls)
	}
}

// failAfter lets ok Rewrap calls through, then fails every call as unavailable.
type failAfter struct {
	kms.KMS
	ok, calls int
}

func (f *failAfter) Rewrap(ctx context.Context, reqs []kms.RewrapRequest) ([]kms.RewrapResult, error) {
	f.calls++
	if f.calls > f.ok {
		return nil, kms.ErrUnavailable
	}
	return f.KMS.(kms.Rewrapper).Rewrap(ctx, reqs)
}
