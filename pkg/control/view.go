package control

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/scope"
)

// Change tells subscribers what one applied record changed. Exactly one of the pointer fields is
// set, or SettingsRemoved.
type Change struct {
	TenantID string
	// Settings are the tenant's new settings.
	Settings *byokv1.TenantSettings
	// SettingsRemoved: the tenant's settings record was deleted (tombstone).
	SettingsRemoved bool
	// Revoked is a revocation that now applies (new, or replacing one with the same id).
	Revoked *byokv1.Revocation
	// Unrevoked is a revocation that no longer applies.
	Unrevoked *byokv1.Revocation
}

// View is the followed state of both control topics. Safe for concurrent use.
type View struct {
	mu       sync.RWMutex
	settings map[string]*byokv1.TenantSettings
	rules    map[string]map[string]Rule // tenant → revocation id → rule
	byKey    map[string]Rule            // revocation topic key → rule (for tombstones)
	subs     []func(Change)

	log      zerolog.Logger
	skipped  atomic.Int64
	applied  atomic.Int64
	lastSync [2]atomic.Int64 // unix nanos at which each follower last saw itself caught up
}

// NewView returns an empty view that follows nothing: records are applied with Apply (tests, and
// the base of Follow).
func NewView(log zerolog.Logger) *View {
	return &View{settings: map[string]*byokv1.TenantSettings{}, rules: map[string]map[string]Rule{},
		byKey: map[string]Rule{}, log: log}
}

// Subscribe registers fn to be called after every applied change, in order, on the follower's
// goroutine: fn must be quick (drop a cache, swap a client) and must not call back into Subscribe.
func (v *View) Subscribe(fn func(Change)) {
	v.mu.Lock()
	v.subs = append(v.subs, fn)
	v.mu.Unlock()
}

// Settings returns the tenant's settings, if any. The record is shared: do not modify it.
func (v *View) Settings(tenantID string) (*byokv1.TenantSettings, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	ts, ok := v.settings[tenantID]
	return ts, ok
}

// Tenants returns the ids of tenants that have settings, sorted.
func (v *View) Tenants() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	ids := make([]string, 0, len(v.settings))
	for id := range v.settings {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Revocations returns the tenant's revocations, oldest first.
func (v *View) Revocations(tenantID string) []*byokv1.Revocation {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]*byokv1.Revocation, 0, len(v.rules[tenantID]))
	for _, r := range v.rules[tenantID] {
		out = append(out, r.Revocation)
	}
	sort.Slice(out, func(i, j int) bool {
		ti, tj := out[i].GetCreatedAt().AsTime(), out[j].GetCreatedAt().AsTime()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return out[i].RevocationId < out[j].RevocationId
	})
	return out
}

// Revoked returns the revocation covering s, if any.
func (v *View) Revoked(s scope.Scope) (*byokv1.Revocation, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, r := range v.rules[s.TenantID] {
		if r.Matches(s) {
			return r.Revocation, true
		}
	}
	return nil, false
}

// HasRevocations reports whether the tenant has any revocation (a cheap pre-check).
func (v *View) HasRevocations(tenantID string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.rules[tenantID]) > 0
}

// Skipped counts records that failed to parse or validate and were ignored.
func (v *View) Skipped() int64 { return v.skipped.Load() }

// Applied counts records applied.
func (v *View) Applied() int64 { return v.applied.Load() }

// SyncedWithin reports whether both followers were caught up with their topics less than d ago.
// A view that cannot reach Kafka stops being synced: readers use this to fail closed rather than
// serve with a revocation list that may be missing the latest revocation.
func (v *View) SyncedWithin(d time.Duration) bool {
	now := time.Now().UnixNano()
	for i := range v.lastSync {
		if now-v.lastSync[i].Load() > d.Nanoseconds() {
			return false
		}
	}
	return true
}

// ApplySettings applies one record of the settings topic (value nil: tombstone).
func (v *View) ApplySettings(key string, value []byte) {
	if value == nil {
		v.mu.Lock()
		_, had := v.settings[key]
		delete(v.settings, key)
		subs := v.subs
		v.mu.Unlock()
		if had {
			v.applied.Add(1)
			notify(subs, Change{TenantID: key, SettingsRemoved: true})
		}
		return
	}
	ts := &byokv1.TenantSettings{}
	if err := proto.Unmarshal(value, ts); err != nil {
		v.skip("settings", key, errors.New("not a TenantSettings record"))
		return
	}
	if err := ValidateSettings(ts); err != nil {
		v.skip("settings", key, err)
		return
	}
	if ts.TenantId != key {
		v.skip("settings", key, fmt.Errorf("%w: key does not match tenant_id", ErrInvalid))
		return
	}
	v.mu.Lock()
	v.settings[key] = ts
	subs := v.subs
	v.mu.Unlock()
	v.applied.Add(1)
	notify(subs, Change{TenantID: key, Settings: ts})
}

// ApplyRevocation applies one record of the revocations topic (value nil: tombstone).
func (v *View) ApplyRevocation(key string, value []byte) {
	if value == nil {
		v.mu.Lock()
		old, had := v.byKey[key]
		if had {
			delete(v.byKey, key)
			rv := old.Revocation
			delete(v.rules[rv.TenantId], rv.RevocationId)
			if len(v.rules[rv.TenantId]) == 0 {
				delete(v.rules, rv.TenantId)
			}
		}
		subs := v.subs
		v.mu.Unlock()
		if had {
			v.applied.Add(1)
			notify(subs, Change{TenantID: old.Revocation.TenantId, Unrevoked: old.Revocation})
		}
		return
	}
	rv := &byokv1.Revocation{}
	if err := proto.Unmarshal(value, rv); err != nil {
		v.skip("revocation", key, errors.New("not a Revocation record"))
		return
	}
	rule, err := Compile(rv)
	if err != nil {
		v.skip("revocation", key, err)
		return
	}
	if RevocationKey(rv.TenantId, rv.RevocationId) != key {
		v.skip("revocation", key, fmt.Errorf("%w: key does not match tenant_id/revocation_id", ErrInvalid))
		return
	}
	v.mu.Lock()
	if v.rules[rv.TenantId] == nil {
		v.rules[rv.TenantId] = map[string]Rule{}
	}
	v.rules[rv.TenantId][rv.RevocationId] = rule
	v.byKey[key] = rule
	subs := v.subs
	v.mu.Unlock()
	v.applied.Add(1)
	notify(subs, Change{TenantID: rv.TenantId, Revoked: rv})
}

func notify(subs []func(Change), c Change) {
	for _, fn := range subs {
		fn(c)
	}
}

func (v *View) skip(kind, key string, err error) {
	v.skipped.Add(1)
	v.log.Warn().Str("record", kind).Str("key", key).Err(err).Msg("control record skipped")
}

// FollowOptions tune Follow; the zero value is the default.
type FollowOptions struct {
	// MaxWait is the longest a fetch waits for new records (default 250ms). New records are
	// returned as soon as they arrive; this only bounds idle polls.
	MaxWait time.Duration
	// SyncInterval is how often each follower checks it is caught up, for SyncedWithin (default 1s).
	SyncInterval time.Duration
}

// Follow creates the control topics if needed, reads both from their beginning, and returns once
// it has caught up with the records that were there when it started; it then keeps following
// until ctx ends. Create the View's subscribers before records matter: Subscribe may be called
// on the returned view, and subscribers see every later change.
func Follow(ctx context.Context, brokers []string, topics Topics, log zerolog.Logger, opts FollowOptions) (*View, error) {
	v := NewView(log)
	if err := EnsureTopics(ctx, brokers, topics); err != nil {
		return nil, err
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 250 * time.Millisecond
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Second
	}
	caught := make(chan error, 2)
	for i, t := range []struct {
		topic string
		apply func(string, []byte)
	}{{topics.Settings, v.ApplySettings}, {topics.Revocations, v.ApplyRevocation}} {
		f := &follower{brokers: brokers, topic: t.topic, apply: t.apply, log: log, synced: &v.lastSync[i], opts: opts}
		go f.run(ctx, caught)
	}
	for range 2 {
		select {
		case err := <-caught:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("control: catching up with the control topics: %w", ctx.Err())
		}
	}
	return v, nil
}

// EnsureTopics creates the two control topics (one partition, compacted) if they do not exist.
func EnsureTopics(ctx context.Context, brokers []string, topics Topics) error {
	if topics.Settings == "" || topics.Revocations == "" || topics.Settings == topics.Revocations {
		return fmt.Errorf("control: need two distinct topic names, have %q and %q", topics.Settings, topics.Revocations)
	}
	cfg := map[string]string{"cleanup.policy": "compact"}
	return kafkax.EnsureTopics(ctx, brokers,
		kafkax.TopicSpec{Name: topics.Settings, Partitions: 1, Config: cfg},
		kafkax.TopicSpec{Name: topics.Revocations, Partitions: 1, Config: cfg})
}

// follower reads one single-partition topic from its first offset, forever.
type follower struct {
	brokers []string
	topic   string
	apply   func(key string, value []byte)
	log     zerolog.Logger
	synced  *atomic.Int64
	opts    FollowOptions
}

func (f *follower) run(ctx context.Context, caught chan<- error) {
	end, err := endOffset(ctx, f.brokers, f.topic)
	if err != nil {
		caught <- err
		return
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: f.brokers, Topic: f.topic, Partition: 0, MinBytes: 1, MaxBytes: 16 << 20,
		MaxWait: f.opts.MaxWait, ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: time.Second,
	})
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		caught <- fmt.Errorf("control: %s: %w", f.topic, err)
		return
	}
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			f.synced.Store(time.Now().UnixNano())
			caught <- nil
			go f.watchSync(ctx, r)
		}
	}
	if end == 0 {
		signal()
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.log.Warn().Str("topic", f.topic).Err(err).Msg("reading control topic; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		f.apply(string(m.Key), m.Value)
		if m.Offset+1 >= end {
			signal()
		}
	}
}

// watchSync records, every SyncInterval, whether the follower is caught up with its topic.
func (f *follower) watchSync(ctx context.Context, r *kafka.Reader) {
	t := time.NewTicker(f.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, f.opts.SyncInterval)
		lag, err := r.ReadLag(lctx)
		cancel()
		if err == nil && lag <= 0 {
			f.synced.Store(time.Now().UnixNano())
		}
	}
}

// endOffset returns the offset one past the last record of partition 0 of topic. It retries for
// a while: right after a topic is created its leader may not be known yet.
func endOffset(ctx context.Context, brokers []string, topic string) (int64, error) {
	var lastErr error
	for attempt := 0; attempt < 60; attempt++ {
		for _, b := range brokers {
			conn, err := kafka.DialLeader(ctx, "tcp", b, topic, 0)
			if err != nil {
				lastErr = err
				continue
			}
			end, err := conn.ReadLastOffset()
			conn.Close()
			if err != nil {
				lastErr = err
				continue
			}
			return end, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("control: end offset of %s: %w", topic, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("control: end offset of %s: %w", topic, lastErr)
}
