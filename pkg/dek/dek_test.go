package dek

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
)

// countingKMS wraps a real provider and records every Wrap call's batch size; fail makes every
// call fail with that error.
type countingKMS struct {
	kms.KMS
	mu      sync.Mutex
	batches []int
	fail    atomic.Pointer[error]
	delay   time.Duration
}

func (c *countingKMS) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	c.mu.Lock()
	c.batches = append(c.batches, len(reqs))
	c.mu.Unlock()
	time.Sleep(c.delay)
	if e := c.fail.Load(); e != nil {
		return nil, *e
	}
	return c.KMS.Wrap(ctx, reqs)
}

func (c *countingKMS) calls() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.batches...)
}

type resolver map[string]kms.KMS

func (r resolver) KMSFor(t string) (kms.KMS, error) {
	if k, ok := r[t]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("tenant %s: %w", t, ErrNoKMS)
}

func newFixture(t *testing.T, tenants ...string) (resolver, map[string]*countingKMS) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(path, tenants...); err != nil {
		t.Fatal(err)
	}
	r := resolver{}
	counters := map[string]*countingKMS{}
	for _, tn := range tenants {
		c := &countingKMS{KMS: local.New(path, tn)}
		r[tn], counters[tn] = c, c
	}
	return r, counters
}

func sc(tenant string, chat int) scope.Scope {
	return scope.Scope{TenantID: tenant, ChatID: fmt.Sprintf("chat-%d", chat), Day: 20426}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Add(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

func TestConcurrentRequestsForOneScopeCoalesce(t *testing.T) {
	r, counters := newFixture(t, "acme")
	counters["acme"].delay = 20 * time.Millisecond
	m := New(r, Config{})
	defer m.Close()
	var wg sync.WaitGroup
	keys := make([]*Key, 100)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := m.Key(context.Background(), sc("acme", 1))
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	if got := counters["acme"].calls(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("KMS batches = %v, want one call with one DEK", got)
	}
	for _, k := range keys {
		if k != keys[0] {
			t.Fatal("concurrent requests for one scope got different DEKs")
		}
	}
}

func TestDistinctScopesShareKMSCalls(t *testing.T) {
	r, counters := newFixture(t, "acme", "globex", "initech")
	m := New(r, Config{BatchWindow: 50 * time.Millisecond, MaxBatch: 500})
	defer m.Close()
	var wg sync.WaitGroup
	// 1,000 scopes of acme and 10 each of two other tenants, requested one by one from many
	// goroutines, as an encryptor's batches would.
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Key(context.Background(), sc("acme", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	var scopes []scope.Scope
	for i := 0; i < 10; i++ {
		scopes = append(scopes, sc("globex", i), sc("initech", i))
	}
	_, errs := m.Keys(context.Background(), scopes)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	acme := counters["acme"].calls()
	total := 0
	for _, n := range acme {
		total += n
		if n > 500 {
			t.Fatalf("a KMS call carried %d DEKs, MaxBatch is 500", n)
		}
	}
	if total != 1000 || len(acme) > 4 {
		t.Fatalf("acme: %d KMS calls carrying %d DEKs (%v); want ≤4 calls for 1000 scopes", len(acme), total, acme)
	}
	for _, tn := range []string{"globex", "initech"} {
		if got := counters[tn].calls(); len(got) != 1 || got[0] != 10 {
			t.Fatalf("%s batches = %v, want one call of 10", tn, got)
		}
	}
	if s := m.Stats(); s.WrappedDEKs != 1020 || s.Cached != 1020 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestCachedKeyIsReusedAndSealsOpenable(t *testing.T) {
	r, counters := newFixture(t, "acme")
	m := New(r, Config{})
	defer m.Close()
	k1, _ := m.Key(context.Background(), sc("acme", 1))
	k2, _ := m.Key(context.Background(), sc("acme", 1))
	if k1 != k2 || len(counters["acme"].calls()) != 1 {
		t.Fatal("second request for a cached scope went to the KMS")
	}
	raw, err := k1.Seal("m-1", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	// Unwrap through the KMS as the read path would, and open.
	e, _ := envelope.Parse(raw)
	res, err := r["acme"].Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: e.Key.WrappedDEK, Context: e.Scope.KMSContext()}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	block, _ := aes.NewCipher(res[0].DEK)
	aead, _ := cipher.NewGCM(block)
	if body, err := envelope.Open(aead, e, "m-1"); err != nil || string(body) != "hello" {
		t.Fatalf("Open = %q, %v", body, err)
	}
}

func TestMaxAgeAndMaxUses(t *testing.T) {
	r, counters := newFixture(t, "acme")
	clock := &fakeClock{now: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	m := New(r, Config{MaxAge: time.Hour, MaxUses: 3, Now: clock.Now, SweepInterval: time.Hour})
	defer m.Close()
	ctx := context.Background()

	k1, _ := m.Key(ctx, sc("acme", 1))
	raw1 := k1.raw
	clock.Add(59 * time.Minute)
	if k, _ := m.Key(ctx, sc("acme", 1)); k != k1 {
		t.Fatal("DEK replaced before its max age")
	}
	clock.Add(2 * time.Minute)
	m.Sweep()
	if !bytes.Equal(raw1, make([]byte, 32)) {
		t.Fatal("expired DEK was not zeroed by Sweep")
	}
	k2, _ := m.Key(ctx, sc("acme", 1))
	if k2 == k1 {
		t.Fatal("DEK served past its max age")
	}
	for i := 0; i < 3; i++ {
		if _, err := k2.Seal(fmt.Sprint(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	k3, _ := m.Key(ctx, sc("acme", 1))
	if k3 == k2 {
		t.Fatal("DEK served past its max uses")
	}
	if !bytes.Equal(k2.raw, make([]byte, 32)) {
		t.Fatal("DEK replaced after max uses was not zeroed")
	}
	if n := len(counters["acme"].calls()); n != 3 {
		t.Fatalf("KMS calls = %d, want 3 (initial, after age, after uses)", n)
	}
}

func TestCacheIsBoundedAndZeroesEvicted(t *testing.T) {
	r, _ := newFixture(t, "acme")
	m := New(r, Config{MaxEntries: 5})
	defer m.Close()
	var first *Key
	for i := 0; i < 20; i++ {
		k, err := m.Key(context.Background(), sc("acme", i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = k
		}
	}
	if s := m.Stats(); s.Cached != 5 || s.Evictions != 15 {
		t.Fatalf("stats = %+v, want 5 cached, 15 evicted", s)
	}
	if !bytes.Equal(first.raw, make([]byte, 32)) {
		t.Fatal("evicted DEK not zeroed")
	}
}

func TestKMSFailureIsNotCached(t *testing.T) {
	r, counters := newFixture(t, "acme")
	m := New(r, Config{})
	defer m.Close()
	unavailable := fmt.Errorf("test: %w", kms.ErrUnavailable)
	counters["acme"].fail.Store(&unavailable)
	if _, err := m.Key(context.Background(), sc("acme", 1)); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Key with failing KMS err = %v, want ErrUnavailable", err)
	}
	counters["acme"].fail.Store(nil)
	if _, err := m.Key(context.Background(), sc("acme", 1)); err != nil {
		t.Fatalf("Key after KMS recovered err = %v", err)
	}
	if _, err := m.Key(context.Background(), sc("nobody", 1)); !errors.Is(err, ErrNoKMS) {
		t.Fatalf("Key for tenant without KMS err = %v, want ErrNoKMS", err)
	}
}

func TestCloseZeroesAll(t *testing.T) {
	r, _ := newFixture(t, "acme")
	m := New(r, Config{})
	k, _ := m.Key(context.Background(), sc("acme", 1))
	m.Close()
	if !bytes.Equal(k.raw, make([]byte, 32)) {
		t.Fatal("Close left a DEK unzeroed")
	}
	if _, err := m.Key(context.Background(), sc("acme", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Key after Close err = %v, want ErrClosed", err)
	}
}

func TestDropScopesEvictsAndZeroesOnlyMatching(t *testing.T) {
	r, counters := newFixture(t, "acme")
	m := New(r, Config{})
	defer m.Close()
	ctx := context.Background()
	k1, _ := m.Key(ctx, sc("acme", 1))
	k2, _ := m.Key(ctx, sc("acme", 2))
	calls := len(counters["acme"].calls())
	if n := m.DropScopes("acme", func(s scope.Scope) bool { return s.ChatID == "chat-1" }); n != 1 {
		t.Fatalf("DropScopes = %d, want 1", n)
	}
	if !bytes.Equal(k1.raw, make([]byte, 32)) || bytes.Equal(k2.raw, make([]byte, 32)) {
		t.Fatal("DropScopes zeroed the wrong DEK")
	}
	if again, _ := m.Key(ctx, sc("acme", 2)); again != k2 {
		t.Fatal("an unmatched scope lost its cached DEK")
	}
	if fresh, _ := m.Key(ctx, sc("acme", 1)); fresh == k1 || len(counters["acme"].calls()) != calls+1 {
		t.Fatal("a dropped scope did not get a fresh DEK from the KMS")
	}
}
