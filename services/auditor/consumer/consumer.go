// Package consumer is the auditor's logic: it reads AuditEvents from the audit topic as a member of
// a consumer group, inserts them into ClickHouse in batches, and commits offsets only after the
// batch holding them was inserted.
//
// Delivery is at least once, storage is exactly once: a crash between insert and commit replays
// records that are already stored, and the store collapses rows of one event_id (see
// schemas/clickhouse/README.md), so FINAL queries see each event once.
//
// Failure handling:
//   - ClickHouse down or rejecting inserts: the batch is retried with backoff until it is stored;
//     nothing is committed meanwhile and nothing is dropped. Fetching stops when the buffer is full
//     (the group membership stays alive), and resumes when the store is back.
//   - A record that does not decode as an AuditEvent, or lacks what the store needs (event id,
//     tenant, time), is logged by topic/partition/offset — never with its payload — counted, and
//     committed with its batch: the audit topic carries only byok's own events, so such a record is
//     a bug to look at, not data to wait for.
//
// What does not live here: flags and wiring (services/auditor/main.go), the schema and SQL
// (pkg/chstore), producing events (pkg/audit).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
)

// Store is where batches of events go. It must return nil only when the whole batch is stored,
// and tolerate the same events being inserted again. *chstore.Store implements it. Insert is
// called from one goroutine at a time.
type Store interface {
	Insert(ctx context.Context, events []*byokv1.AuditEvent) error
}

var _ Store = (*chstore.Store)(nil)

// Config configures a Consumer. Zero values take the defaults noted.
type Config struct {
	Brokers []string
	Topic   string // default audit.TopicAudit ("byok.audit")
	GroupID string // default "byok-auditor"

	// A batch is inserted when it holds FlushCount records (default 10,000) or FlushBytes of
	// record keys and values (default 8 MiB), or FlushInterval after its first record (default 1s).
	FlushCount    int
	FlushBytes    int
	FlushInterval time.Duration

	// RetryMin and RetryMax bound the backoff between insert attempts (default 200ms and 30s).
	RetryMin, RetryMax time.Duration
	// InsertTimeout bounds one insert attempt (default 30s).
	InsertTimeout time.Duration
	// SessionTimeout is the consumer group session timeout (default 10s; at least 6s on kfake).
	SessionTimeout time.Duration
	// ShutdownTimeout bounds flushing and committing after the context ends (default 15s); a
	// batch not stored by then stays uncommitted and is replayed by the next consumer.
	ShutdownTimeout time.Duration
}

// Validate checks the configuration and names the setting at fault.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("brokers: at least one Kafka broker is required")
	case c.FlushCount < 0:
		return fmt.Errorf("flush-count: %d is negative", c.FlushCount)
	case c.FlushBytes < 0:
		return fmt.Errorf("flush-bytes: %d is negative", c.FlushBytes)
	case c.FlushInterval < 0:
		return fmt.Errorf("flush-interval: %v is negative", c.FlushInterval)
	case c.RetryMin < 0 || c.RetryMax < 0 || (c.RetryMax > 0 && c.RetryMin > c.RetryMax):
		return fmt.Errorf("retry backoff: min %v and max %v must be positive and min <= max", c.RetryMin, c.RetryMax)
	case c.SessionTimeout < 0 || c.ShutdownTimeout < 0 || c.InsertTimeout < 0:
		return errors.New("session, shutdown and insert timeouts must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Topic == "" {
		c.Topic = audit.TopicAudit
	}
	if c.GroupID == "" {
		c.GroupID = "byok-auditor"
	}
	if c.FlushCount == 0 {
		c.FlushCount = 10_000
	}
	if c.FlushBytes == 0 {
		c.FlushBytes = 8 << 20
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.RetryMin == 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.RetryMin > c.RetryMax {
		c.RetryMin = c.RetryMax
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
}

// Stats are counters since the consumer started.
type Stats struct {
	Consumed       int64 // records fetched
	Inserted       int64 // events in batches the store accepted (replays included)
	Batches        int64 // batches stored
	Undecodable    int64 // records that are not AuditEvents (skipped, committed)
	Invalid        int64 // AuditEvents the store cannot hold (skipped, committed)
	InsertFailures int64 // failed insert attempts (each retry counts)
	Commits        int64
	CommitFailures int64
}

// Consumer moves audit events from Kafka to the store. Create with New, then Run once.
type Consumer struct {
	cfg    Config
	store  Store
	log    zerolog.Logger
	reader *kafka.Reader

	consumed, inserted, batches, undecodable, invalid, insertFailures, commits, commitFailures atomic.Int64
}

// New builds a consumer; it connects on Run.
func New(cfg Config, store Store, log zerolog.Logger) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	c := &Consumer{cfg: cfg, store: store, log: log}
	c.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.Brokers,
		GroupID:           cfg.GroupID,
		Topic:             cfg.Topic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     min(cfg.FlushCount, 10_000),
		CommitInterval:    0, // synchronous commits, only of stored batches
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    cfg.SessionTimeout,
		HeartbeatInterval: cfg.SessionTimeout / 5,
		RebalanceTimeout:  cfg.SessionTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
	})
	return c, nil
}

// Stats returns the counters.
func (c *Consumer) Stats() Stats {
	return Stats{
		Consumed: c.consumed.Load(), Inserted: c.inserted.Load(), Batches: c.batches.Load(),
		Undecodable: c.undecodable.Load(), Invalid: c.invalid.Load(), InsertFailures: c.insertFailures.Load(),
		Commits: c.commits.Load(), CommitFailures: c.commitFailures.Load(),
	}
}

// batch is the records collected for one insert.
type batch struct {
	msgs  []kafka.Message
	bytes int
}

func (b *batch) add(m kafka.Message) {
	b.msgs = append(b.msgs, m)
	b.bytes += len(m.Key) + len(m.Value)
}

func (b *batch) reset() { b.msgs, b.bytes = b.msgs[:0], 0 }

// ErrAbandoned reports that a batch was not stored before the shutdown deadline; its records stay
// uncommitted and are replayed by the group.
var ErrAbandoned = errors.New("auditor: batch not stored before shutdown; its records stay uncommitted and will be replayed")

// Run consumes until ctx ends, then stops fetching, flushes what was fetched, commits and closes —
// within ShutdownTimeout. It returns ErrAbandoned (wrapped) if a batch could not be stored by then.
func (c *Consumer) Run(ctx context.Context) error {
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	// Inserts and commits outlive ctx by at most ShutdownTimeout, so a stop finishes its batch.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-ctx.Done():
		case <-workCtx.Done():
			return
		}
		t := time.NewTimer(c.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-workCtx.Done():
		}
	}()

	fetched := make(chan kafka.Message, c.cfg.FlushCount)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(fetched)
		c.fetchLoop(fetchCtx, fetched)
	}()
	c.log.Info().Str("topic", c.cfg.Topic).Str("group_id", c.cfg.GroupID).Int("flush_count", c.cfg.FlushCount).
		Int("flush_bytes", c.cfg.FlushBytes).Dur("flush_interval", c.cfg.FlushInterval).Msg("auditor started")

	var (
		b      batch
		runErr error
		timer  = time.NewTimer(time.Hour)
	)
	timer.Stop()
	flush := func() bool {
		if len(b.msgs) == 0 {
			return true
		}
		if err := c.flush(workCtx, b.msgs); err != nil {
			runErr = err
			return false
		}
		b.reset()
		return true
	}
loop:
	for {
		var m kafka.Message
		var ok bool
		select {
		case m, ok = <-fetched:
			if !ok {
				break loop
			}
		case <-timer.C:
			if !flush() {
				break loop
			}
			continue
		case <-ctx.Done():
			break loop
		}
		if len(b.msgs) == 0 {
			timer.Reset(c.cfg.FlushInterval)
		}
		c.consumed.Add(1)
		b.add(m)
		if len(b.msgs) >= c.cfg.FlushCount || b.bytes >= c.cfg.FlushBytes {
			timer.Stop()
			if !flush() {
				break loop
			}
		}
	}
	timer.Stop()

	// Stop fetching, then store and commit what was already fetched.
	stopFetch()
	for m := range fetched {
		if runErr != nil {
			continue // draining only, so the fetcher can exit; these are replayed
		}
		c.consumed.Add(1)
		b.add(m)
		if len(b.msgs) >= c.cfg.FlushCount || b.bytes >= c.cfg.FlushBytes {
			flush()
		}
	}
	wg.Wait()
	if runErr == nil {
		flush()
	}
	cancelWork()
	closeErr := c.reader.Close()
	c.log.Info().Interface("stats", c.Stats()).Msg("auditor stopped")
	if runErr != nil {
		return runErr
	}
	if closeErr != nil {
		return fmt.Errorf("auditor: close reader: %w", closeErr)
	}
	return nil
}

func (c *Consumer) fetchLoop(ctx context.Context, out chan<- kafka.Message) {
	kafkax.Fetch(ctx, c.reader, out, c.cfg.RetryMin, c.cfg.RetryMax, nil, c.log)
}

// flush decodes msgs, stores the events (retrying until stored or ctx ends), then commits msgs.
func (c *Consumer) flush(ctx context.Context, msgs []kafka.Message) error {
	events := make([]*byokv1.AuditEvent, 0, len(msgs))
	for _, m := range msgs {
		ev := &byokv1.AuditEvent{}
		if err := proto.Unmarshal(m.Value, ev); err != nil {
			c.undecodable.Add(1)
			// The error text of a protobuf parse does not quote the payload; the payload is never logged.
			c.log.Error().Str("topic", m.Topic).Int("partition", m.Partition).Int64("offset", m.Offset).
				Int("bytes", len(m.Value)).Err(err).Msg("record is not an AuditEvent; skipped")
			continue
		}
		if err := chstore.CheckEvent(ev); err != nil {
			c.invalid.Add(1)
			c.log.Error().Str("topic", m.Topic).Int("partition", m.Partition).Int64("offset", m.Offset).
				Str("event_id", ev.EventId).Str("tenant_id", ev.TenantId).Err(err).Msg("audit event cannot be stored; skipped")
			continue
		}
		events = append(events, ev)
	}
	if err := c.insert(ctx, events); err != nil {
		return err
	}
	c.commit(ctx, msgs)
	return nil
}

// insert stores events, retrying with backoff until it succeeds or ctx ends.
func (c *Consumer) insert(ctx context.Context, events []*byokv1.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	backoff := c.cfg.RetryMin
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.cfg.InsertTimeout)
		err := c.store.Insert(actx, events)
		cancel()
		if err == nil {
			c.inserted.Add(int64(len(events)))
			c.batches.Add(1)
			if attempt > 1 {
				c.log.Info().Int("events", len(events)).Int("attempts", attempt).Dur("after", time.Since(start)).Msg("insert succeeded; resuming")
			}
			return nil
		}
		c.insertFailures.Add(1)
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %d events: %v", ErrAbandoned, len(events), err)
		}
		lvl := c.log.Warn()
		if !chstore.IsUnavailable(err) {
			lvl = c.log.Error() // the server rejected the batch: a schema or data problem to fix
		}
		lvl.Err(err).Int("events", len(events)).Int("attempt", attempt).Dur("backoff", backoff).
			Msg("insert failed; retrying, nothing is committed until it succeeds")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%w: %d events: %v", ErrAbandoned, len(events), err)
		}
		backoff = min(backoff*2, c.cfg.RetryMax)
	}
}

// commit commits, per partition, the highest offset in msgs. Every record of msgs is stored (or
// skipped as undecodable), so everything up to it is done.
func (c *Consumer) commit(ctx context.Context, msgs []kafka.Message) {
	type tp struct {
		topic     string
		partition int
	}
	last := map[tp]kafka.Message{}
	for _, m := range msgs {
		k := tp{m.Topic, m.Partition}
		if p, ok := last[k]; !ok || m.Offset > p.Offset {
			last[k] = m
		}
	}
	out := make([]kafka.Message, 0, len(last))
	for _, m := range last {
		out = append(out, kafka.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset})
	}
	if err := c.reader.CommitMessages(ctx, out...); err != nil {
		// After a rebalance the partition may belong to another member now: it replays from the
		// last commit, and the store collapses the replayed events.
		c.commitFailures.Add(1)
		c.log.Warn().Err(err).Msg("commit failed; stored records after the last commit will be replayed")
		return
	}
	c.commits.Add(1)
}
