package deccache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/scope"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func newDEK(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func isZero(b []byte) bool { return bytes.Equal(b, make([]byte, len(b))) }

func newCache(t *testing.T, cfg Config) (*Cache, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	cfg.Now = clk.Now
	cfg.SweepInterval = time.Hour // the tests drive Sweep themselves
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New() err = %v, want nil", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, clk
}

// TestNothingServedAtOrAfterTTL holds the read path's revocation bound: a DEK is served before
// its TTL and never at or after it, and it is zeroed then.
func TestNothingServedAtOrAfterTTL(t *testing.T) {
	c, clk := newCache(t, Config{TenantTTL: map[string]time.Duration{"short": 2 * time.Second}})
	for _, tc := range []struct {
		tenant string
		ttl    time.Duration
	}{{"acme", DefaultTTL}, {"short", 2 * time.Second}} {
		t.Run(tc.tenant, func(t *testing.T) {
			k := Key{Tenant: tc.tenant, WrappedDEK: "w", Context: "ctx"}
			dek := newDEK(7)
			if _, err := c.Put(k, dek, clk.Now()); err != nil {
				t.Fatalf("Put() err = %v", err)
			}
			clk.Add(tc.ttl - time.Nanosecond)
			if _, ok := c.Get(k); !ok {
				t.Fatalf("Get() 1ns before TTL = miss, want hit")
			}
			clk.Add(time.Nanosecond)
			if _, ok := c.Get(k); ok {
				t.Fatalf("Get() at TTL %s = hit, want miss", tc.ttl)
			}
			if !isZero(dek) {
				t.Fatalf("expired DEK not zeroed")
			}
		})
	}
}

func TestSweepZeroesExpired(t *testing.T) {
	c, clk := newCache(t, Config{TTL: 10 * time.Second, MaxTTL: 10 * time.Second})
	old, fresh := newDEK(1), newDEK(2)
	c.Put(Key{Tenant: "a", WrappedDEK: "old"}, old, clk.Now())
	clk.Add(5 * time.Second)
	c.Put(Key{Tenant: "a", WrappedDEK: "fresh"}, fresh, clk.Now())
	clk.Add(5 * time.Second)
	c.Sweep()
	if !isZero(old) || isZero(fresh) {
		t.Fatalf("after Sweep: old zeroed %t (want true), fresh zeroed %t (want false)", isZero(old), isZero(fresh))
	}
	if s := c.Stats(); s.Entries != 1 || s.Expired != 1 {
		t.Fatalf("Stats() = %+v, want 1 entry, 1 expired", s)
	}
}

func TestKeyIncludesScopeContextAndTenant(t *testing.T) {
	c, clk := newCache(t, Config{})
	c.Put(Key{Tenant: "acme", WrappedDEK: "w", Context: "chat-1"}, newDEK(1), clk.Now())
	for _, k := range []Key{{Tenant: "acme", WrappedDEK: "w", Context: "chat-2"}, {Tenant: "globex", WrappedDEK: "w", Context: "chat-1"}} {
		if _, ok := c.Get(k); ok {
			t.Errorf("Get(%+v) = hit, want miss", k)
		}
	}
}

func TestBoundedLRUZeroesEvicted(t *testing.T) {
	c, clk := newCache(t, Config{MaxEntries: 3})
	deks := make([][]byte, 5)
	for i := range deks {
		deks[i] = newDEK(byte(i + 1))
		c.Put(Key{Tenant: "a", WrappedDEK: fmt.Sprint(i)}, deks[i], clk.Now())
		if i == 2 {
			c.Get(Key{Tenant: "a", WrappedDEK: "0"}) // 0 becomes most recent; 1 and 2 go first
		}
	}
	wantZero := []bool{false, true, true, false, false}
	for i, d := range deks {
		if isZero(d) != wantZero[i] {
			t.Errorf("DEK %d zeroed = %t, want %t", i, isZero(d), wantZero[i])
		}
	}
	if s := c.Stats(); s.Entries != 3 || s.Evicted != 2 {
		t.Fatalf("Stats() = %+v, want 3 entries, 2 evicted", s)
	}
}

func TestDropTenantAndCloseZero(t *testing.T) {
	c, clk := newCache(t, Config{})
	a, b := newDEK(1), newDEK(2)
	c.Put(Key{Tenant: "a", WrappedDEK: "1"}, a, clk.Now())
	c.Put(Key{Tenant: "b", WrappedDEK: "1"}, b, clk.Now())
	if n := c.DropTenant("a"); n != 1 || !isZero(a) || isZero(b) {
		t.Fatalf("DropTenant(a) = %d, a zeroed %t, b zeroed %t; want 1, true, false", n, isZero(a), isZero(b))
	}
	c.Close()
	if !isZero(b) {
		t.Fatalf("Close() left a DEK unzeroed")
	}
	late := newDEK(3)
	if _, err := c.Put(Key{Tenant: "b", WrappedDEK: "2"}, late, clk.Now()); err != nil || !isZero(late) {
		t.Fatalf("Put after Close: err %v, zeroed %t; want nil, true", err, isZero(late))
	}
}

func TestTTLConfig(t *testing.T) {
	c, _ := newCache(t, Config{TenantTTL: map[string]time.Duration{"long": 10 * time.Minute, "short": time.Second}})
	for tenant, want := range map[string]time.Duration{"long": DefaultTTL, "short": time.Second, "other": DefaultTTL} {
		if got := c.TTL(tenant); got != want {
			t.Errorf("TTL(%s) = %s, want %s (customer overrides are clamped to the operator's ceiling)", tenant, got, want)
		}
	}
	c2, _ := newCache(t, Config{MaxTTL: 5 * time.Minute, TenantTTL: map[string]time.Duration{"long": 10 * time.Minute}})
	if got := c2.TTL("long"); got != 5*time.Minute {
		t.Errorf("TTL(long) with a 5m ceiling = %s, want 5m", got)
	}
	for _, cfg := range []Config{
		{TTL: 2 * time.Minute},
		{MaxTTL: -time.Second},
		{TenantTTL: map[string]time.Duration{"x": 0}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) err = nil, want an error", cfg)
		}
	}
}

func TestPutRejectsNonAESKey(t *testing.T) {
	c, clk := newCache(t, Config{})
	bad := bytes.Repeat([]byte{9}, 16)
	if _, err := c.Put(Key{Tenant: "a"}, bad, clk.Now()); err != ErrNotAESKey || !isZero(bad) {
		t.Fatalf("Put(16-byte key) err = %v, zeroed %t; want ErrNotAESKey, true", err, isZero(bad))
	}
}

func TestDropScopesZeroesOnlyMatching(t *testing.T) {
	c, clk := newCache(t, Config{})
	d := scope.DayOf(clk.Now())
	key := func(tenant, chat string) Key {
		return Key{Tenant: tenant, WrappedDEK: chat, Context: string(scope.Scope{TenantID: tenant, ChatID: chat, Day: d}.KMSContext())}
	}
	c1, c2, other := newDEK(1), newDEK(2), newDEK(3)
	c.Put(key("acme", "c1"), c1, clk.Now())
	c.Put(key("acme", "c2"), c2, clk.Now())
	c.Put(key("globex", "c1"), other, clk.Now())
	n := c.DropScopes("acme", func(s scope.Scope) bool { return s.ChatID == "c1" })
	if n != 1 || !isZero(c1) || isZero(c2) || isZero(other) {
		t.Fatalf("DropScopes = %d; zeroed c1 %t, c2 %t, globex %t; want 1, true, false, false", n, isZero(c1), isZero(c2), isZero(other))
	}
	if _, ok := c.Get(key("acme", "c1")); ok {
		t.Fatal("a dropped scope is still served")
	}
	if _, ok := c.Get(key("acme", "c2")); !ok {
		t.Fatal("an unrevoked scope was dropped")
	}
}

// TestSetTenantTTL: the customer's saved TTL wins over the operator's, is clamped to MaxTTL,
// shortens the life of DEKs already cached, and removing it restores the operator's TTL.
func TestSetTenantTTL(t *testing.T) {
	c, clk := newCache(t, Config{MaxTTL: time.Minute, TenantTTL: map[string]time.Duration{"acme": 30 * time.Second}})
	k := Key{Tenant: "acme", WrappedDEK: "1"}
	c.Put(k, newDEK(1), clk.Now())
	clk.Add(15 * time.Second)
	c.SetTenantTTL("acme", 10*time.Second)
	if c.TTL("acme") != 10*time.Second {
		t.Fatalf("TTL = %s, want the saved 10s", c.TTL("acme"))
	}
	if _, ok := c.Get(k); ok {
		t.Fatal("a DEK unwrapped 15s ago is served under a saved TTL of 10s")
	}
	c.SetTenantTTL("acme", time.Hour)
	if c.TTL("acme") != time.Minute {
		t.Fatalf("TTL = %s, want it clamped to MaxTTL 1m", c.TTL("acme"))
	}
	c.SetTenantTTL("acme", 0)
	if c.TTL("acme") != 30*time.Second || c.TTL("globex") != time.Minute {
		t.Fatalf("after removal TTL(acme) = %s, TTL(globex) = %s; want the operator's 30s and 1m", c.TTL("acme"), c.TTL("globex"))
	}
}
