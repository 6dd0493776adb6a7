// Package forward is the forwarder's logic: it reads AuditEvents from the audit topic in its own
// consumer group (independent of the ClickHouse auditor), and delivers each tenant's events to
// that tenant's webhook as signed JSON batches, committing offsets only after delivery.
//
// Delivery is at least once. A batch is acknowledged by a 2xx answer; only then are its records
// marked done, and a partition's offset is committed only up to its oldest record not yet done.
// A crash or restart therefore re-sends what was not committed: receivers deduplicate by the
// events' event_id (X-Byok-Idempotency-Key identifies a batch across retries of one process).
//
// Failure handling (never drop, never give up):
//   - network errors, timeouts, 5xx, 408 and 429: retried with exponential backoff and jitter
//     (RetryMin doubling to RetryMax; Retry-After is honoured up to RetryMax), logged as warnings.
//   - any other status (other 4xx, 3xx — redirects are not followed): the receiver rejects the
//     payload, which is usually its misconfiguration (wrong secret, moved URL). There is no
//     dead-letter: the batch is retried every RejectedRetry (with jitter) and every attempt logs an
//     error, so fixing the receiver resumes delivery with nothing lost.
//   - one tenant's receiver down: each tenant has its own delivery lane (goroutine and queue), so
//     other tenants keep receiving. The failing tenant's events wait in memory, bounded by MaxHeld
//     (events fetched and not yet delivered, over all tenants); at the bound, fetching pauses for
//     everyone (memory stays bounded; the group membership stays alive) until deliveries move
//     again. Commits of a partition stay behind the failing tenant's oldest event, so a restart
//     replays from there; healthy tenants then receive some events twice.
//   - tenants without a target: their events are skipped and committed (counted in Untargeted).
//     Records that are not AuditEvents are skipped the same way (Undecodable), logged by
//     partition/offset only.
//
// Secrets: webhook secrets, extra header values and URL queries are never logged; response
// bodies are never logged. Events carry no message bodies and no DEKs (tests hold that).
//
// What does not live here: flags and wiring (services/forwarder/main.go), producing events
// (pkg/audit), storing them (services/auditor).
package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
)

// Config configures a Forwarder. Zero values take the defaults noted.
type Config struct {
	Brokers []string
	Topic   string // default audit.TopicAudit ("byok.audit")
	GroupID string // default "byok-forwarder"

	// A tenant's batch is sent when it holds BatchSize events (default 500) or BatchWait after
	// its first event (default 1s).
	BatchSize int
	BatchWait time.Duration
	// Timeout bounds one HTTP attempt (default 10s).
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff of retryable failures (default 500ms and 30s).
	RetryMin, RetryMax time.Duration
	// RejectedRetry is the pause before re-sending a batch the receiver rejected (default 1m).
	RejectedRetry time.Duration
	// MaxHeld bounds events fetched and not yet delivered; at the bound fetching pauses
	// (default 100,000).
	MaxHeld int
	// SessionTimeout is the consumer group session timeout (default 10s; at least 6s on kfake).
	SessionTimeout time.Duration
	// ShutdownTimeout bounds finishing in-flight deliveries after the context ends (default 15s);
	// what is not delivered by then stays uncommitted and is replayed by the next consumer.
	ShutdownTimeout time.Duration
	// HTTPClient sends the requests; default: a client with Timeout per attempt that does not
	// follow redirects. Its own Timeout, if any, is replaced by the per-attempt context.
	HTTPClient *http.Client
}

// Validate checks the configuration and names the setting at fault.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("brokers: at least one Kafka broker is required")
	case c.BatchSize < 0:
		return fmt.Errorf("batch-size: %d is negative", c.BatchSize)
	case c.BatchWait < 0:
		return fmt.Errorf("batch-wait: %v is negative", c.BatchWait)
	case c.Timeout < 0:
		return fmt.Errorf("timeout: %v is negative", c.Timeout)
	case c.RetryMin < 0 || c.RetryMax < 0 || (c.RetryMax > 0 && c.RetryMin > c.RetryMax):
		return fmt.Errorf("retry backoff: min %v and max %v must be positive and min <= max", c.RetryMin, c.RetryMax)
	case c.RejectedRetry < 0:
		return fmt.Errorf("rejected-retry: %v is negative", c.RejectedRetry)
	case c.MaxHeld < 0:
		return fmt.Errorf("max-held: %d is negative", c.MaxHeld)
	case c.MaxHeld > 0 && c.BatchSize > c.MaxHeld:
		return fmt.Errorf("batch-size: %d is larger than max-held %d", c.BatchSize, c.MaxHeld)
	case c.SessionTimeout < 0 || c.ShutdownTimeout < 0:
		return errors.New("session and shutdown timeouts must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Topic == "" {
		c.Topic = audit.TopicAudit
	}
	if c.GroupID == "" {
		c.GroupID = "byok-forwarder"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.BatchWait == 0 {
		c.BatchWait = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.RetryMin == 0 {
		c.RetryMin = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.RetryMin > c.RetryMax {
		c.RetryMin = c.RetryMax
	}
	if c.RejectedRetry == 0 {
		c.RejectedRetry = time.Minute
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = max(100_000, c.BatchSize)
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
}

// Stats are counters since the forwarder started.
type Stats struct {
	Consumed         int64 // records fetched
	Delivered        int64 // events in acknowledged batches (replays included)
	Batches          int64 // batches acknowledged
	Untargeted       int64 // events of tenants without a target (skipped, committed)
	Undecodable      int64 // records that are not AuditEvents (skipped, committed)
	Held             int64 // events waiting for delivery now
	DeliveryFailures int64 // failed attempts (each retry counts)
	Rejections       int64 // attempts the receiver rejected (4xx other than 408/429, 3xx)
	Commits          int64
	CommitFailures   int64
}

// Forwarder moves audit events from Kafka to the tenants' webhooks. Create with New, then Run
// once.
type Forwarder struct {
	cfg     Config
	targets map[string]*Target
	log     zerolog.Logger
	reader  *kafka.Reader
	offs    *kafkax.Offsets
	slots   chan struct{} // one per held event, capacity MaxHeld

	lanesMu sync.Mutex
	lanes   map[string]*lane
	lanesWG sync.WaitGroup

	// abandoned counts events left undelivered when lanes stopped at the shutdown deadline.
	abandoned atomic.Int64

	consumed, delivered, batches, untargeted, undecodable, held, failures, rejections, commits, commitFailures atomic.Int64
}

// New builds a forwarder for targets (by tenant id, as ParseTargets returns); it connects on Run.
func New(cfg Config, targets map[string]*Target, log zerolog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	f := &Forwarder{cfg: cfg, targets: targets, log: log, offs: kafkax.NewOffsets(),
		slots: make(chan struct{}, cfg.MaxHeld), lanes: map[string]*lane{}}
	f.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.Brokers,
		GroupID:           cfg.GroupID,
		Topic:             cfg.Topic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     min(cfg.BatchSize, 10_000),
		CommitInterval:    0, // synchronous commits, only of delivered records
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    cfg.SessionTimeout,
		HeartbeatInterval: cfg.SessionTimeout / 5,
		RebalanceTimeout:  cfg.SessionTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
	})
	return f, nil
}

// Stats returns the counters.
func (f *Forwarder) Stats() Stats {
	return Stats{
		Consumed: f.consumed.Load(), Delivered: f.delivered.Load(), Batches: f.batches.Load(),
		Untargeted: f.untargeted.Load(), Undecodable: f.undecodable.Load(), Held: f.held.Load(),
		DeliveryFailures: f.failures.Load(), Rejections: f.rejections.Load(),
		Commits: f.commits.Load(), CommitFailures: f.commitFailures.Load(),
	}
}

// ErrAbandoned reports that some events were not delivered before the shutdown deadline; they
// stay uncommitted and are replayed by the group.
var ErrAbandoned = errors.New("forwarder: events not delivered before shutdown; they stay uncommitted and will be replayed")

// Run forwards until ctx ends, then stops fetching, finishes the deliveries in flight, commits
// and closes — within ShutdownTimeout. It returns ErrAbandoned (wrapped) if events were left
// undelivered by then.
func (f *Forwarder) Run(ctx context.Context) error {
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	// Deliveries outlive ctx by at most ShutdownTimeout, so a stop finishes what is in flight.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-ctx.Done():
		case <-workCtx.Done():
			return
		}
		t := time.NewTimer(f.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-workCtx.Done():
		}
	}()

	fetched := make(chan kafka.Message, f.cfg.BatchSize)
	var fetchWG sync.WaitGroup
	fetchWG.Add(1)
	go func() {
		defer fetchWG.Done()
		defer close(fetched)
		f.fetchLoop(fetchCtx, fetched)
	}()
	commitCtx, stopCommits := context.WithCancel(workCtx)
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		f.commitLoop(commitCtx)
	}()
	f.log.Info().Str("topic", f.cfg.Topic).Str("group_id", f.cfg.GroupID).Int("targets", len(f.targets)).
		Int("batch_size", f.cfg.BatchSize).Dur("batch_wait", f.cfg.BatchWait).Int("max_held", f.cfg.MaxHeld).Msg("forwarder started")

loop:
	for {
		select {
		case m, ok := <-fetched:
			if !ok {
				break loop
			}
			if !f.dispatch(ctx, workCtx, m) {
				break loop
			}
		case <-ctx.Done():
			break loop
		}
	}

	// Stop fetching. Records fetched but not dispatched were never tracked: they are after every
	// tracked offset of their partition, so no commit covers them and the group replays them.
	stopFetch()
	for range fetched {
	}
	fetchWG.Wait()
	// Finish what the lanes hold (bounded by ShutdownTimeout), then commit what was delivered.
	f.lanesMu.Lock()
	for _, l := range f.lanes {
		l.close()
	}
	f.lanesMu.Unlock()
	f.lanesWG.Wait()
	stopCommits()
	<-commitDone
	// A commit only ever covers delivered records, so it is safe (and useful) even after the
	// shutdown deadline: give it its own short bound.
	finalCtx, cancelFinal := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	f.commit(finalCtx)
	cancelFinal()
	cancelWork()
	closeErr := f.reader.Close()
	f.log.Info().Interface("stats", f.Stats()).Msg("forwarder stopped")
	if n := f.abandoned.Load(); n > 0 {
		return fmt.Errorf("%w: %d events", ErrAbandoned, n)
	}
	if closeErr != nil {
		return fmt.Errorf("forwarder: close reader: %w", closeErr)
	}
	return nil
}

func (f *Forwarder) fetchLoop(ctx context.Context, out chan<- kafka.Message) {
	kafkax.Fetch(ctx, f.reader, out, f.cfg.RetryMin, f.cfg.RetryMax, nil, f.log)
}

// dispatch tracks m and hands its event to the tenant's lane, or finishes it at once if there is
// nothing to deliver. It waits for a free slot (MaxHeld) and reports false if ctx ended first.
func (f *Forwarder) dispatch(ctx, workCtx context.Context, m kafka.Message) bool {
	f.consumed.Add(1)
	ev := &byokv1.AuditEvent{}
	if err := proto.Unmarshal(m.Value, ev); err != nil {
		f.undecodable.Add(1)
		// The error text of a protobuf parse does not quote the payload; the payload is never logged.
		f.log.Error().Str("topic", m.Topic).Int("partition", m.Partition).Int64("offset", m.Offset).
			Int("bytes", len(m.Value)).Err(err).Msg("record is not an AuditEvent; skipped")
		f.offs.Add(m.Partition, m.Offset)
		f.offs.Done(m.Partition, m.Offset)
		return true
	}
	t := f.targets[ev.GetTenantId()]
	if t == nil {
		f.untargeted.Add(1)
		f.offs.Add(m.Partition, m.Offset)
		f.offs.Done(m.Partition, m.Offset)
		return true
	}
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	f.held.Add(1)
	f.offs.Add(m.Partition, m.Offset)
	f.laneFor(workCtx, t).push(item{partition: m.Partition, offset: m.Offset, event: EventJSON(ev)})
	return true
}

func (f *Forwarder) laneFor(workCtx context.Context, t *Target) *lane {
	f.lanesMu.Lock()
	defer f.lanesMu.Unlock()
	l := f.lanes[t.TenantID]
	if l == nil {
		l = &lane{target: t, wake: make(chan struct{}, 1)}
		f.lanes[t.TenantID] = l
		f.lanesWG.Add(1)
		go func() {
			defer f.lanesWG.Done()
			f.runLane(workCtx, l)
		}()
	}
	return l
}

// item is one event waiting for delivery, with the record it came from.
type item struct {
	partition int
	offset    int64
	event     Event
}

// lane is one tenant's delivery queue, drained by one goroutine, so a tenant's batches go out in
// order and a failing tenant waits alone.
type lane struct {
	target *Target
	wake   chan struct{} // capacity 1: "the queue or closing changed"

	mu      sync.Mutex
	queue   []item
	closing bool
}

func (l *lane) push(it item) {
	l.mu.Lock()
	l.queue = append(l.queue, it)
	l.mu.Unlock()
	l.signal()
}

func (l *lane) close() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.signal()
}

func (l *lane) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lane) state() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue), l.closing
}

// runLane sends the lane's events in batches until it is closed and empty, or ctx ends (then
// what is left is abandoned: uncommitted, replayed).
func (f *Forwarder) runLane(ctx context.Context, l *lane) {
	defer func() {
		n, _ := l.state()
		f.abandoned.Add(int64(n))
	}()
	for {
		n, closing := l.state()
		if n == 0 {
			if closing {
				return
			}
			select {
			case <-l.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if n < f.cfg.BatchSize && !closing {
			timer := time.NewTimer(f.cfg.BatchWait)
		wait:
			for {
				select {
				case <-l.wake:
					if n, closing = l.state(); n >= f.cfg.BatchSize || closing {
						break wait
					}
				case <-timer.C:
					break wait
				case <-ctx.Done():
					timer.Stop()
					return
				}
			}
			timer.Stop()
		}
		l.mu.Lock()
		batch := l.queue[:min(len(l.queue), f.cfg.BatchSize)]
		l.mu.Unlock()
		if err := f.deliver(ctx, l.target, batch); err != nil {
			return
		}
		for _, it := range batch {
			f.offs.Done(it.partition, it.offset)
		}
		l.mu.Lock()
		l.queue = append(l.queue[:0:0], l.queue[len(batch):]...)
		l.mu.Unlock()
		f.held.Add(-int64(len(batch)))
		for range batch {
			<-f.slots
		}
	}
}

// outcome classifies one attempt.
type outcome int

const (
	delivered outcome = iota
	retryable         // network error, timeout, 5xx, 408, 429
	rejected          // any other status: the receiver refuses this payload
)

// deliver sends one batch until the receiver acknowledges it (2xx) or ctx ends.
func (f *Forwarder) deliver(ctx context.Context, t *Target, batch []item) error {
	events := make([]Event, len(batch))
	for i, it := range batch {
		events[i] = it.event
	}
	body, err := json.Marshal(Batch{TenantID: t.TenantID, Events: events})
	if err != nil {
		return fmt.Errorf("forwarder: encode batch: %w", err) // cannot happen: plain strings and numbers
	}
	key := IdempotencyKey(events)
	signature := Sign(t.secret, body)
	first, last := events[0].EventID, events[len(events)-1].EventID
	backoff := f.cfg.RetryMin
	start := time.Now()
	for attempt := 1; ; attempt++ {
		out, status, retryAfter, err := f.post(ctx, t, body, signature, key, first+".."+last, len(events), attempt)
		if out == delivered {
			f.delivered.Add(int64(len(events)))
			f.batches.Add(1)
			if attempt > 1 {
				f.log.Info().Str("tenant_id", t.TenantID).Str("target", t.Redacted()).Int("events", len(events)).
					Int("attempts", attempt).Dur("after", time.Since(start)).Msg("delivery succeeded; resuming")
			}
			return nil
		}
		f.failures.Add(1)
		if ctx.Err() != nil {
			return ErrAbandoned
		}
		wait := jitter(backoff)
		if retryAfter > 0 {
			wait = max(wait, min(retryAfter, f.cfg.RetryMax))
		}
		lvl := f.log.Warn()
		msg := "delivery failed; retrying, nothing is committed until it succeeds"
		if out == rejected {
			f.rejections.Add(1)
			wait = jitter(f.cfg.RejectedRetry)
			lvl = f.log.Error()
			msg = "receiver rejected the batch; fix the receiver: retrying slowly, nothing is dropped or committed"
		} else {
			backoff = min(backoff*2, f.cfg.RetryMax)
		}
		e := lvl.Str("tenant_id", t.TenantID).Str("target", t.Redacted()).Int("events", len(events)).
			Str("first_event_id", first).Str("last_event_id", last).Int("attempt", attempt).Dur("backoff", wait)
		if status != 0 {
			e = e.Int("status", status)
		}
		if err != nil {
			e = e.Err(err)
		}
		e.Msg(msg)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ErrAbandoned
		}
	}
}

// post makes one attempt. Errors never carry the URL (its query may hold a token).
func (f *Forwarder) post(ctx context.Context, t *Target, body []byte, signature, key, eventRange string, n, attempt int) (outcome, int, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, t.url.String(), bytes.NewReader(body))
	if err != nil {
		return retryable, 0, 0, errors.New("cannot build request")
	}
	for k, v := range t.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "byok-forwarder/1")
	req.Header.Set(HeaderSignature, signature)
	req.Header.Set(HeaderIdempotencyKey, key)
	req.Header.Set(HeaderEventRange, eventRange)
	req.Header.Set(HeaderEventCount, strconv.Itoa(n))
	req.Header.Set(HeaderTenant, t.TenantID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := f.cfg.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return retryable, 0, 0, err
	}
	// Drain a little for connection reuse; the body is never logged (it may echo anything).
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return delivered, s, 0, nil
	case s >= 500 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests:
		return retryable, s, retryAfter(resp.Header.Get("Retry-After")), nil
	default:
		return rejected, s, 0, nil
	}
}

// retryAfter parses a Retry-After header given in seconds (HTTP dates are ignored).
func retryAfter(v string) time.Duration {
	s, err := strconv.Atoi(v)
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// jitter returns a duration in [d/2, d): spreads retries of many tenants and processes.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// commitLoop commits delivered records every 200ms until ctx ends.
func (f *Forwarder) commitLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.commit(ctx)
		}
	}
}

// commit commits, per partition, up to the oldest record not yet done.
func (f *Forwarder) commit(ctx context.Context) {
	parts := f.offs.Committable()
	if len(parts) == 0 {
		return
	}
	msgs := make([]kafka.Message, 0, len(parts))
	for p, off := range parts {
		msgs = append(msgs, kafka.Message{Topic: f.cfg.Topic, Partition: p, Offset: off})
	}
	if err := f.reader.CommitMessages(ctx, msgs...); err != nil {
		// After a rebalance the partition may belong to another member now: it replays from its
		// last commit, and receivers see those events again (same event ids).
		f.commitFailures.Add(1)
		f.log.Warn().Err(err).Msg("commit failed; delivered records after the last commit will be replayed")
		return
	}
	f.commits.Add(1)
}
