// Package dek manages the DEKs the encrypt path seals messages with: one DEK per scope
// (tenant × chat × UTC day), generated locally with crypto/rand, wrapped through the tenant's KMS
// in batches, and kept in plaintext only in a bounded in-memory cache.
//
// Batching has two layers. Concurrent requests for one scope coalesce into one pending DEK.
// Requests for different scopes that arrive within Config.BatchWindow (or until
// Config.MaxBatch scopes are pending) share one KMS Wrap call per tenant.
//
// Cached DEKs expire after Config.MaxAge or Config.MaxUses seals, whichever comes first, and the
// cache holds at most Config.MaxEntries of them; evicted DEKs are zeroed. Plaintext DEKs never
// leave this package except inside a cipher.AEAD.
package dek

import (
	"container/list"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/scope"
)

// Config tunes the manager. Zero fields take the defaults documented on each.
type Config struct {
	// MaxAge is how long a DEK seals new messages (default 1h, Kroxylicious' refresh interval).
	MaxAge time.Duration
	// MaxUses is how many messages one DEK seals (default 2^24, far below GCM's 2^32 limit for
	// random nonces).
	MaxUses int64
	// MaxEntries bounds the cache (default 100,000 DEKs, ~30 MB).
	MaxEntries int
	// BatchWindow is how long a new scope waits for others to share its KMS call (default 5ms).
	BatchWindow time.Duration
	// MaxBatch is the most scopes one KMS Wrap call carries (default 500).
	MaxBatch int
	// MaxConcurrentCalls bounds KMS calls in flight across tenants (default 16).
	MaxConcurrentCalls int
	// CallTimeout bounds one KMS call (default 10s).
	CallTimeout time.Duration
	// SweepInterval is how often expired DEKs are evicted and zeroed (default min(MaxAge/10, 10s)).
	SweepInterval time.Duration
	// Now is the clock, for tests.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.MaxAge <= 0 {
		c.MaxAge = time.Hour
	}
	if c.MaxUses <= 0 {
		c.MaxUses = 1 << 24
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	if c.BatchWindow <= 0 {
		c.BatchWindow = 5 * time.Millisecond
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 500
	}
	if c.MaxConcurrentCalls <= 0 {
		c.MaxConcurrentCalls = 16
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = min(c.MaxAge/10, 10*time.Second)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Resolver finds the KMS of a tenant. An error wrapping ErrNoKMS means the tenant has no byok
// configuration.
type Resolver interface {
	KMSFor(tenantID string) (kms.KMS, error)
}

// ErrNoKMS is returned for a tenant without a KMS configuration.
var ErrNoKMS = errors.New("dek: tenant has no KMS configured")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("dek: manager closed")

// Key is a DEK ready to seal messages of one scope. It is safe for concurrent use.
type Key struct {
	Scope scope.Scope
	Ref   envelope.KeyRef

	aead    cipher.AEAD
	raw     []byte
	created time.Time
	uses    atomic.Int64
	elem    *list.Element // position in the LRU list, guarded by Manager.mu
}

// Seal encrypts body as message messageID and counts one use of the DEK.
func (k *Key) Seal(messageID string, body []byte) ([]byte, error) {
	k.uses.Add(1)
	return envelope.Seal(k.aead, k.Ref, k.Scope, messageID, body)
}

// Stats are counters since the manager started.
type Stats struct {
	KMSCalls     int64 // Wrap calls made
	WrappedDEKs  int64 // DEKs wrapped
	CacheHits    int64
	CacheMisses  int64 // scopes that needed a new DEK (coalesced requests count once)
	Evictions    int64 // DEKs dropped and zeroed (expiry, max uses, capacity)
	Cached       int   // DEKs in the cache now
	KMSErrors    int64 // Wrap calls or items that failed
	MaxBatchSeen int64
}

type call struct {
	done chan struct{}
	key  *Key
	err  error
}

type request struct {
	scope scope.Scope
	call  *call
}

// Manager hands out DEKs by scope. Create it with New; it must be closed.
type Manager struct {
	cfg      Config
	resolver Resolver

	mu       sync.Mutex
	cache    map[scope.Scope]*Key
	lru      *list.List // front = most recently used; values are *Key
	inflight map[scope.Scope]*call

	reqs   chan request
	sem    chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool

	kmsCalls, wrapped, hits, misses, evictions, kmsErrors, maxBatch atomic.Int64
}

// New starts a manager; Close stops it and zeroes every cached DEK.
func New(r Resolver, cfg Config) *Manager {
	cfg.setDefaults()
	m := &Manager{
		cfg:      cfg,
		resolver: r,
		cache:    make(map[scope.Scope]*Key),
		lru:      list.New(),
		inflight: make(map[scope.Scope]*call),
		reqs:     make(chan request, cfg.MaxBatch),
		sem:      make(chan struct{}, cfg.MaxConcurrentCalls),
		stop:     make(chan struct{}),
	}
	m.wg.Add(2)
	go m.batchLoop()
	go m.sweepLoop()
	return m
}

// Key returns a usable DEK for scope s, waiting for a KMS wrap if none is cached.
func (m *Manager) Key(ctx context.Context, s scope.Scope) (*Key, error) {
	keys, errs := m.Keys(ctx, []scope.Scope{s})
	if errs[0] != nil {
		return nil, errs[0]
	}
	return keys[0], nil
}

// Keys returns a DEK for each scope (or an error at the same index). Scopes missing from the
// cache are wrapped together, so a caller with many scopes should pass them in one call.
func (m *Manager) Keys(ctx context.Context, scopes []scope.Scope) ([]*Key, []error) {
	keys := make([]*Key, len(scopes))
	errs := make([]error, len(scopes))
	calls := make([]*call, len(scopes))
	if m.closed.Load() {
		for i := range errs {
			errs[i] = ErrClosed
		}
		return keys, errs
	}
	var send []request
	now := m.cfg.Now()
	m.mu.Lock()
	for i, s := range scopes {
		if k := m.cache[s]; k != nil {
			if m.usable(k, now) {
				m.lru.MoveToFront(k.elem)
				keys[i] = k
				m.hits.Add(1)
				continue
			}
			m.evictLocked(k)
		}
		c := m.inflight[s]
		if c == nil {
			c = &call{done: make(chan struct{})}
			m.inflight[s] = c
			m.misses.Add(1)
			send = append(send, request{scope: s, call: c})
		}
		calls[i] = c
	}
	m.mu.Unlock()

	for _, r := range send {
		select {
		case m.reqs <- r:
		case <-m.stop:
			m.finish(r.scope, r.call, nil, ErrClosed)
		}
	}
	for i, c := range calls {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
			keys[i], errs[i] = c.key, c.err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		case <-m.stop:
			errs[i] = ErrClosed
		}
	}
	return keys, errs
}

func (m *Manager) usable(k *Key, now time.Time) bool {
	return now.Sub(k.created) < m.cfg.MaxAge && k.uses.Load() < m.cfg.MaxUses
}

// batchLoop gathers requests for new DEKs and flushes them as KMS calls: when MaxBatch are
// pending, or BatchWindow after the first one arrived.
func (m *Manager) batchLoop() {
	defer m.wg.Done()
	var pending []request
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(pending) > 0 {
			m.dispatch(pending)
			pending = nil
		}
	}
	for {
		select {
		case r := <-m.reqs:
			if len(pending) == 0 {
				timer.Reset(m.cfg.BatchWindow)
			}
			pending = append(pending, r)
			if len(pending) >= m.cfg.MaxBatch {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
		case <-m.stop:
			timer.Stop()
			for _, r := range pending {
				m.finish(r.scope, r.call, nil, ErrClosed)
			}
			for {
				select {
				case r := <-m.reqs:
					m.finish(r.scope, r.call, nil, ErrClosed)
				default:
					return
				}
			}
		}
	}
}

// dispatch splits pending requests by tenant, in chunks of MaxBatch, one KMS call each.
func (m *Manager) dispatch(pending []request) {
	byTenant := make(map[string][]request)
	for _, r := range pending {
		byTenant[r.scope.TenantID] = append(byTenant[r.scope.TenantID], r)
	}
	for tenant, rs := range byTenant {
		for len(rs) > 0 {
			n := min(len(rs), m.cfg.MaxBatch)
			chunk := rs[:n]
			rs = rs[n:]
			m.sem <- struct{}{}
			m.wg.Add(1)
			go func() {
				defer func() { <-m.sem; m.wg.Done() }()
				m.wrap(tenant, chunk)
			}()
		}
	}
}

func (m *Manager) wrap(tenant string, rs []request) {
	fail := func(err error) {
		for _, r := range rs {
			m.finish(r.scope, r.call, nil, err)
		}
	}
	client, err := m.resolver.KMSFor(tenant)
	if err != nil {
		fail(err)
		return
	}
	deks := make([][]byte, len(rs))
	reqs := make([]kms.WrapRequest, len(rs))
	for i, r := range rs {
		deks[i] = make([]byte, 32)
		if _, err := rand.Read(deks[i]); err != nil {
			fail(fmt.Errorf("dek: generate: %w", err))
			return
		}
		reqs[i] = kms.WrapRequest{DEK: deks[i], Context: r.scope.KMSContext()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CallTimeout)
	defer cancel()
	m.kmsCalls.Add(1)
	if n := int64(len(rs)); n > m.maxBatch.Load() {
		m.maxBatch.Store(n)
	}
	res, err := client.Wrap(ctx, reqs)
	if err == nil && len(res) != len(rs) {
		err = fmt.Errorf("dek: %s returned %d results for %d DEKs: %w", client.Provider(), len(res), len(rs), kms.ErrUnavailable)
	}
	if err != nil {
		m.kmsErrors.Add(1)
		for _, d := range deks {
			kms.Zero(d)
		}
		fail(fmt.Errorf("dek: wrap for tenant %s: %w", tenant, err))
		return
	}
	now := m.cfg.Now()
	for i, r := range rs {
		if res[i].Err != nil {
			m.kmsErrors.Add(1)
			kms.Zero(deks[i])
			m.finish(r.scope, r.call, nil, fmt.Errorf("dek: wrap %s: %w", r.scope, res[i].Err))
			continue
		}
		block, err := aes.NewCipher(deks[i])
		if err != nil {
			kms.Zero(deks[i])
			m.finish(r.scope, r.call, nil, err)
			continue
		}
		aead, _ := cipher.NewGCM(block) // cannot fail for AES with default sizes
		m.wrapped.Add(1)
		k := &Key{
			Scope: r.scope,
			Ref: envelope.KeyRef{
				Provider: client.Provider(), KEKID: client.KEKID(),
				KEKVersion: res[i].KEKVersion, WrappedDEK: res[i].WrappedDEK,
			},
			aead:    aead,
			raw:     deks[i],
			created: now,
		}
		m.finish(r.scope, r.call, k, nil)
	}
}

// finish completes a pending scope: caches the key (if any), wakes the waiters.
func (m *Manager) finish(s scope.Scope, c *call, k *Key, err error) {
	m.mu.Lock()
	if k != nil && !m.closed.Load() {
		if old := m.cache[s]; old != nil {
			m.evictLocked(old)
		}
		k.elem = m.lru.PushFront(k)
		m.cache[s] = k
		for m.lru.Len() > m.cfg.MaxEntries {
			m.evictLocked(m.lru.Back().Value.(*Key))
		}
	}
	if m.inflight[s] == c {
		delete(m.inflight, s)
	}
	m.mu.Unlock()
	c.key, c.err = k, err
	close(c.done)
}

// evictLocked drops k from the cache and zeroes its plaintext. Sealing already in progress with
// k's AEAD still completes: the AEAD holds its own key schedule.
func (m *Manager) evictLocked(k *Key) {
	if m.cache[k.Scope] == k {
		delete(m.cache, k.Scope)
	}
	if k.elem != nil {
		m.lru.Remove(k.elem)
		k.elem = nil
		kms.Zero(k.raw)
		m.evictions.Add(1)
	}
}

func (m *Manager) sweepLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.Sweep()
		case <-m.stop:
			return
		}
	}
}

// Sweep evicts and zeroes every DEK past its max age or max uses. It runs every SweepInterval;
// tests call it directly.
func (m *Manager) Sweep() {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.cache {
		if !m.usable(k, now) {
			m.evictLocked(k)
		}
	}
}

// DropTenant evicts and zeroes every cached DEK of a tenant (its KMS configuration changed).
func (m *Manager) DropTenant(tenantID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s, k := range m.cache {
		if s.TenantID == tenantID {
			m.evictLocked(k)
		}
	}
}

// DropScopes evicts and zeroes every cached DEK of tenantID whose scope match accepts (a granular
// revocation: the next message of such a scope gets a fresh DEK) and returns how many.
func (m *Manager) DropScopes(tenantID string, match func(scope.Scope) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for s, k := range m.cache {
		if s.TenantID == tenantID && match(s) {
			m.evictLocked(k)
			n++
		}
	}
	return n
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	n := len(m.cache)
	m.mu.Unlock()
	return Stats{
		KMSCalls: m.kmsCalls.Load(), WrappedDEKs: m.wrapped.Load(),
		CacheHits: m.hits.Load(), CacheMisses: m.misses.Load(), Evictions: m.evictions.Load(),
		Cached: n, KMSErrors: m.kmsErrors.Load(), MaxBatchSeen: m.maxBatch.Load(),
	}
}

// Close stops the manager, waits for KMS calls in flight, and zeroes every cached DEK.
func (m *Manager) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	close(m.stop)
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.cache {
		m.evictLocked(k)
	}
	return nil
}
