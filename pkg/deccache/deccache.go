// Package deccache is the read path's short-lived cache of unwrapped DEKs: a DEK unwrapped
// through a tenant's KMS opens further envelopes of its scope for at most the tenant's TTL (default
// and ceiling 60 s unless the operator raises the ceiling), then it is zeroed and the next read has
// to ask the tenant's KMS again. That TTL is the bound on how long a KMS-level revocation (the
// customer revokes byok's credential or disables the key) can be outlived by reads
// (INVARIANTS.md 8).
//
// Entries are keyed by tenant, wrapped DEK and scope KMS context — the same wrapped DEK under
// another scope is another entry. The cache is bounded (least recently used entries go first),
// and every DEK leaving it — expired, evicted, dropped or at Close — is zeroed. The AES key
// schedule inside the cipher.AEAD handed out cannot be zeroed from outside Go's crypto/aes; its
// reference is dropped with the entry (as in pkg/dek).
//
// The cache knows nothing about callers, authorization or audit: the reader checks a caller's
// rights before it looks here, and records the read itself.
package deccache

import (
	"container/list"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/scope"
)

// Defaults of Config.
const (
	// DefaultTTL is the default and the ceiling of every tenant's TTL unless the operator sets
	// MaxTTL higher.
	DefaultTTL = 60 * time.Second
	// DefaultMaxEntries bounds the cache (~100 bytes of DEK and AES state per entry plus keys).
	DefaultMaxEntries = 100_000
)

// Config tunes a Cache. Zero fields take the defaults documented on each.
type Config struct {
	// MaxTTL is the operator's ceiling: no tenant's DEK is served longer (default DefaultTTL).
	MaxTTL time.Duration
	// TTL is the TTL of tenants without an override (default MaxTTL); it may not exceed MaxTTL.
	TTL time.Duration
	// TenantTTL overrides the TTL per tenant (the customer's choice). An override above MaxTTL is
	// clamped to MaxTTL: the customer may shorten the window, only the operator lengthens it.
	TenantTTL map[string]time.Duration
	// MaxEntries bounds the number of cached DEKs (default DefaultMaxEntries).
	MaxEntries int
	// SweepInterval is how often expired DEKs are zeroed even if nobody asks for them (default
	// min(smallest TTL/4, 1s)). Expiry does not depend on it: Get never serves an expired entry.
	SweepInterval time.Duration
	// Now is the clock, for tests (default time.Now).
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultTTL
	}
	if c.MaxTTL < 0 {
		return fmt.Errorf("deccache: max TTL %s is negative", c.MaxTTL)
	}
	if c.TTL == 0 {
		c.TTL = c.MaxTTL
	}
	if c.TTL < 0 || c.TTL > c.MaxTTL {
		return fmt.Errorf("deccache: TTL %s is outside (0, %s]", c.TTL, c.MaxTTL)
	}
	smallest := c.TTL
	for t, d := range c.TenantTTL {
		if d <= 0 {
			return fmt.Errorf("deccache: TTL of tenant %s is %s, want > 0", t, d)
		}
		smallest = min(smallest, d)
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = max(min(smallest/4, time.Second), time.Millisecond)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Key names one cached DEK.
type Key struct {
	Tenant     string
	WrappedDEK string
	Context    string // the scope's KMS context
}

type entry struct {
	key       Key
	dek       []byte
	aead      cipher.AEAD
	unwrapped time.Time
	expires   time.Time
	elem      *list.Element
}

// Stats are counters since the cache was created.
type Stats struct {
	Hits, Misses int64
	Expired      int64 // zeroed because their TTL passed
	Evicted      int64 // zeroed to stay within MaxEntries
	Dropped      int64 // zeroed by DropTenant (configuration change or revocation seen)
	Entries      int
}

// Cache holds unwrapped DEKs for their TTL. Safe for concurrent use. Close it to zero every DEK.
type Cache struct {
	cfg Config

	ttlMu    sync.RWMutex
	savedTTL map[string]time.Duration // tenant → TTL the customer saved (SetTenantTTL)

	mu      sync.Mutex
	entries map[Key]*entry
	lru     *list.List // front = most recently used
	closed  bool

	hits, misses, expired, evicted, dropped atomic.Int64

	stop chan struct{}
	done chan struct{}
}

// New returns a cache and starts its sweeper.
func New(cfg Config) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, savedTTL: map[string]time.Duration{}, entries: map[Key]*entry{}, lru: list.New(),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.sweepLoop()
	return c, nil
}

// TTL is how long a DEK of tenant is served after it was unwrapped: the TTL the customer saved
// (SetTenantTTL), else the operator's per-tenant TTL, else the default — never above MaxTTL.
func (c *Cache) TTL(tenant string) time.Duration {
	c.ttlMu.RLock()
	d, ok := c.savedTTL[tenant]
	c.ttlMu.RUnlock()
	if ok {
		return min(d, c.cfg.MaxTTL)
	}
	if d, ok := c.cfg.TenantTTL[tenant]; ok {
		return min(d, c.cfg.MaxTTL)
	}
	return c.cfg.TTL
}

// SetTenantTTL applies the TTL a tenant's customer saved in their settings (d ≤ 0: none saved,
// back to the operator's). It applies to DEKs already cached too: each now expires at its unwrap
// time plus the new TTL if that is sooner, so shortening the window takes effect at once.
func (c *Cache) SetTenantTTL(tenant string, d time.Duration) {
	c.ttlMu.Lock()
	if d > 0 {
		c.savedTTL[tenant] = d
	} else {
		delete(c.savedTTL, tenant)
	}
	c.ttlMu.Unlock()
	ttl := c.TTL(tenant)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if k.Tenant == tenant {
			e.expires = minTime(e.expires, e.unwrapped.Add(ttl))
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Get returns the AEAD of k's DEK if it is cached and its TTL has not passed. An expired entry is
// zeroed on the spot: nothing is served at or after its expiry, whether or not the sweeper ran.
func (c *Cache) Get(k Key) (cipher.AEAD, bool) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	if !now.Before(e.expires) {
		c.removeLocked(e)
		c.expired.Add(1)
		c.misses.Add(1)
		return nil, false
	}
	c.lru.MoveToFront(e.elem)
	c.hits.Add(1)
	return e.aead, true
}

// ErrNotAESKey is returned by Put for a DEK that is not an AES-256 key.
var ErrNotAESKey = errors.New("deccache: unwrapped DEK is not an AES-256 key")

// Now is the cache's clock: take it just before the KMS call whose DEKs are Put.
func (c *Cache) Now() time.Time { return c.cfg.Now() }

// Put caches dek, unwrapped by a KMS call that started at unwrappedAt (from Now), under k and
// returns its AEAD. The cache takes ownership of dek: it is zeroed when the entry goes, and at
// once if it cannot be used. Counting the TTL from the start of the KMS call, not from Put, keeps
// the bound conservative: the KMS said yes no earlier than that.
func (c *Cache) Put(k Key, dek []byte, unwrappedAt time.Time) (cipher.AEAD, error) {
	if len(dek) != 32 {
		kms.Zero(dek)
		return nil, ErrNotAESKey
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		kms.Zero(dek)
		return nil, ErrNotAESKey
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		kms.Zero(dek)
		return nil, ErrNotAESKey
	}
	e := &entry{key: k, dek: dek, aead: aead, unwrapped: unwrappedAt, expires: unwrappedAt.Add(c.TTL(k.Tenant))}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		kms.Zero(dek)
		return aead, nil // usable for the request that unwrapped it, not cached
	}
	if old, ok := c.entries[k]; ok {
		c.removeLocked(old)
	}
	e.elem = c.lru.PushFront(e)
	c.entries[k] = e
	for len(c.entries) > c.cfg.MaxEntries {
		c.removeLocked(c.lru.Back().Value.(*entry))
		c.evicted.Add(1)
	}
	return aead, nil
}

func (c *Cache) removeLocked(e *entry) {
	kms.Zero(e.dek)
	e.aead = nil
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
}

// DropTenant zeroes every cached DEK of tenant: its configuration changed, or its KMS denied
// access (the key owner revoked it), so nothing unwrapped before may serve another read.
func (c *Cache) DropTenant(tenant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.entries {
		if k.Tenant == tenant {
			c.removeLocked(e)
			n++
		}
	}
	c.dropped.Add(int64(n))
	return n
}

// DropScopes zeroes every cached DEK of tenant whose scope match accepts (a granular revocation
// arrived) and returns how many. Entries whose context is not a scope's are dropped too.
func (c *Cache) DropScopes(tenant string, match func(scope.Scope) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.entries {
		if k.Tenant != tenant {
			continue
		}
		if s, ok := scope.ParseKMSContext([]byte(k.Context)); !ok || match(s) {
			c.removeLocked(e)
			n++
		}
	}
	c.dropped.Add(int64(n))
	return n
}

// Sweep zeroes every expired DEK. The sweeper calls it every SweepInterval.
func (c *Cache) Sweep() {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if !now.Before(e.expires) {
			c.removeLocked(e)
			c.expired.Add(1)
		}
	}
}

func (c *Cache) sweepLoop() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Sweep()
		}
	}
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Expired: c.expired.Load(),
		Evicted: c.evicted.Load(), Dropped: c.dropped.Load(), Entries: n}
}

// Close stops the sweeper and zeroes every cached DEK. Later Puts are not cached.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, e := range c.entries {
		c.removeLocked(e)
	}
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	return nil
}
