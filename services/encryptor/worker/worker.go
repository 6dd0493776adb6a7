// Package worker is the encryptor: it consumes plaintext MessageEvents from Kafka as a member of
// a consumer group, seals each body with its scope's DEK, writes StoredMessages to the storage
// topic, and commits input offsets only after every output of those inputs is acknowledged by all
// in-sync replicas.
//
// Failure handling, in the order a record meets it:
//   - a record that does not parse or validate goes to the dead-letter topic with the reason in
//     headers (never with its payload, which may hold a plaintext body) and the worker goes on;
//   - a tenant without byok is passed through unencrypted or dead-lettered, per Config;
//   - a tenant whose KMS fails is held in memory and retried with backoff while other tenants'
//     records flow; held records keep their partitions' commits back, so a crash replays them.
//     A held record is never written unencrypted and never dropped.
package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/scope"
)

// Unencrypted tenants policies.
const (
	// Reject dead-letters messages of tenants without byok (the safe default).
	Reject = "reject"
	// PassThrough stores them unencrypted (StoredMessage.plaintext_body).
	PassThrough = "passthrough"
)

// Modes.
const (
	// ModeEncrypt is the product.
	ModeEncrypt = "encrypt"
	// ModeIdentity copies input records to the storage topic unchanged: the benchmark's baseline
	// for the same consume→produce path without decoding or encryption. Never for production.
	ModeIdentity = "identity"
)

// Config configures a worker. Zero values take the defaults noted.
type Config struct {
	Brokers         []string
	InputTopic      string // default kafkax.TopicPlaintext
	StorageTopic    string // default kafkax.TopicStored
	DeadLetterTopic string // default kafkax.TopicDeadLetter
	GroupID         string // default "byok-encryptor"
	WorkerID        string // names this process in logs (default "encryptor")

	// BatchSize is the most records processed together (default 1000).
	BatchSize int
	// BatchWait is how long a batch waits to fill after its first record (default 10ms).
	BatchWait time.Duration
	// Unencrypted is the policy for tenants without byok: Reject (default) or PassThrough.
	Unencrypted string
	// MaxHeld bounds records held for failing KMSs; when reached, fetching pauses (default 100,000).
	MaxHeld int
	// RetryMin and RetryMax bound the backoff of held records (default 200ms and 30s).
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds finishing in-flight work after the context ends (default 15s).
	ShutdownTimeout time.Duration
	// SessionTimeout is the consumer group session timeout (default 10s): how long until a dead
	// worker's partitions move to the others.
	SessionTimeout time.Duration
	// Mode is ModeEncrypt (default) or ModeIdentity.
	Mode string
	// ObserveSeal, if set, is told of every batch sealed: how many records were sealed (or held)
	// and how long getting their DEKs and sealing took. For metrics; it must be quick.
	ObserveSeal func(records int, d time.Duration)
}

// Validate checks the configuration and names the setting at fault.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 || c.Brokers[0] == "" {
		return errors.New("brokers: at least one Kafka broker is required")
	}
	switch c.Unencrypted {
	case "", Reject, PassThrough:
	default:
		return fmt.Errorf("unencrypted-tenants: %q is not %q or %q", c.Unencrypted, Reject, PassThrough)
	}
	switch c.Mode {
	case "", ModeEncrypt, ModeIdentity:
	default:
		return fmt.Errorf("mode: %q is not %q or %q", c.Mode, ModeEncrypt, ModeIdentity)
	}
	if c.BatchSize < 0 || c.MaxHeld < 0 {
		return errors.New("batch-size and max-held must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.InputTopic, kafkax.TopicPlaintext)
	def(&c.StorageTopic, kafkax.TopicStored)
	def(&c.DeadLetterTopic, kafkax.TopicDeadLetter)
	def(&c.GroupID, "byok-encryptor")
	def(&c.WorkerID, "encryptor")
	def(&c.Unencrypted, Reject)
	def(&c.Mode, ModeEncrypt)
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait == 0 {
		c.BatchWait = 10 * time.Millisecond
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = 100_000
	}
	if c.RetryMin == 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
}

// Directory says which tenants have byok on. *tenant.Directory implements it.
type Directory interface {
	Enabled(tenantID string) bool
}

// Keys hands out DEKs by scope. *dek.Manager implements it.
type Keys interface {
	Keys(ctx context.Context, scopes []scope.Scope) ([]*dek.Key, []error)
}

// Stats are counters since the worker started.
type Stats struct {
	Consumed     int64 // records fetched (replays of held records not counted again)
	Encrypted    int64 // envelopes written
	PassedThru   int64 // unencrypted StoredMessages written (tenants without byok, PassThrough)
	DeadLettered int64
	Held         int64 // records waiting for a failing KMS now
	HoldEvents   int64 // times a record was held (each retry that failed again counts)
	Commits      int64
	Written      int64 // records acknowledged by the storage topic (envelopes, pass-through, identity)
}

// Worker is one encryptor process's consumer. Create with New, then Run.
type Worker struct {
	cfg  Config
	dir  Directory
	keys Keys
	log  zerolog.Logger

	reader  *kafka.Reader
	lag     *kafkax.Lag
	storage *kafka.Writer
	dlq     *kafka.Writer

	consumed, encrypted, passed, dead, holdEvents, commits, written atomic.Int64
	held                                                            atomic.Int64
}

// New builds a worker; it connects on Run.
func New(cfg Config, dir Directory, keys Keys, log zerolog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	w := &Worker{cfg: cfg, dir: dir, keys: keys, log: log.With().Str("worker_id", cfg.WorkerID).Logger()}
	w.lag = kafkax.NewLag(time.Minute)
	w.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.Brokers,
		GroupID:           cfg.GroupID,
		Topic:             cfg.InputTopic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     cfg.BatchSize,
		CommitInterval:    0, // synchronous commits, only of finished records
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    cfg.SessionTimeout,
		HeartbeatInterval: cfg.SessionTimeout / 5,
		RebalanceTimeout:  cfg.SessionTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
	})
	w.storage = kafkax.NewWriter(cfg.Brokers, cfg.StorageTopic, cfg.BatchSize, 2*time.Millisecond)
	w.dlq = kafkax.NewWriter(cfg.Brokers, cfg.DeadLetterTopic, 100, 2*time.Millisecond)
	return w, nil
}

// Stats returns the counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Consumed: w.consumed.Load(), Encrypted: w.encrypted.Load(), PassedThru: w.passed.Load(),
		DeadLettered: w.dead.Load(), Held: w.held.Load(), HoldEvents: w.holdEvents.Load(),
		Commits: w.commits.Load(), Written: w.written.Load(),
	}
}

// Lag is how far the worker is behind the input topic, in records: the sum over the partitions it
// fetched from in the last minute of each one's high-water mark minus its next offset, as of its
// last fetch.
func (w *Worker) Lag() int64 { return w.lag.Total() }

// item is one input record on its way through the worker.
type item struct {
	msg      kafka.Message
	event    *byokv1.MessageEvent // nil until decoded
	attempts int
	due      time.Time
}

// Run consumes until ctx ends, then stops fetching, finishes the batch in hand, commits what is
// finished, and closes — within ShutdownTimeout.
func (w *Worker) Run(ctx context.Context) error {
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	// Work (writes, commits) outlives ctx by at most ShutdownTimeout, so a stop finishes cleanly.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		<-ctx.Done()
		t := time.NewTimer(w.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-workCtx.Done():
		}
	}()

	fetched := make(chan kafka.Message, w.cfg.BatchSize)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(fetched)
		w.fetchLoop(fetchCtx, fetched)
	}()

	w.log.Info().Str("input_topic", w.cfg.InputTopic).Str("storage_topic", w.cfg.StorageTopic).
		Str("group_id", w.cfg.GroupID).Str("mode", w.cfg.Mode).Msg("encryptor started")

	// Two stages: this goroutine collects and transforms batch N+1 while the writer stage writes
	// batch N, marks its records finished and commits. One writer keeps per-chat order.
	offs := kafkax.NewOffsets()
	jobs := make(chan job, 2)
	writerDone := make(chan error, 1)
	go func() { writerDone <- w.writeLoop(workCtx, jobs, offs) }()
	var held []*item
	var runErr error
loop:
	for {
		batch, open := w.collect(ctx, fetched, &held, offs)
		if len(batch) > 0 {
			j := w.prepare(workCtx, batch, &held)
			select {
			case jobs <- j:
			case runErr = <-writerDone:
				writerDone <- runErr
				break loop
			}
		}
		if !open || ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	if err := <-writerDone; runErr == nil {
		runErr = err
	}
	stopFetch()
	for range fetched { // let the fetcher exit; unprocessed records are replayed by the group
	}
	wg.Wait()
	w.commit(workCtx, offs)
	if len(held) > 0 {
		w.log.Warn().Int("held", len(held)).Msg("stopping with records held for failing KMSs; they are uncommitted and will be replayed")
	}
	cancelWork()
	errs := errors.Join(w.reader.Close(), w.storage.Close(), w.dlq.Close())
	w.log.Info().Interface("stats", w.Stats()).Msg("encryptor stopped")
	if runErr != nil {
		return runErr
	}
	return errs
}

func (w *Worker) fetchLoop(ctx context.Context, out chan<- kafka.Message) {
	kafkax.Fetch(ctx, w.reader, out, w.cfg.RetryMin, w.cfg.RetryMax, w.lag, w.log)
}

// collect returns the next batch: held records that are due, plus fresh records — waiting for the
// first one (or the next held record's due time), then up to BatchWait for the batch to fill.
// It reports false when the fetcher has stopped.
func (w *Worker) collect(ctx context.Context, fetched <-chan kafka.Message, held *[]*item, offs *kafkax.Offsets) ([]*item, bool) {
	now := time.Now()
	var batch []*item
	var next time.Time
	keep := (*held)[:0]
	for _, it := range *held {
		if !it.due.After(now) && len(batch) < w.cfg.BatchSize {
			batch = append(batch, it)
		} else {
			keep = append(keep, it)
			if next.IsZero() || it.due.Before(next) {
				next = it.due
			}
		}
	}
	// The held gauge is not lowered here: records taken out for a retry still wait for their KMS
	// until prepare has put them back or finished them (it updates the gauge).
	*held = keep

	accept := func(m kafka.Message) {
		w.consumed.Add(1)
		if !offs.Add(m.Partition, m.Offset) {
			// The group rewound this partition: its held records will be fetched again.
			*held = dropPartition(*held, m.Partition)
			batch = dropPartition(batch, m.Partition)
		}
		batch = append(batch, &item{msg: m})
	}
	room := func() bool { return len(batch) < w.cfg.BatchSize && len(*held)+len(batch) < w.cfg.MaxHeld }

	if len(batch) == 0 {
		var wake <-chan time.Time
		if !next.IsZero() {
			t := time.NewTimer(time.Until(next))
			defer t.Stop()
			wake = t.C
		}
		in := fetched
		if !room() {
			in = nil // hold limit reached: wait for held records only
		}
		select {
		case m, ok := <-in:
			if !ok {
				return nil, false
			}
			accept(m)
		case <-wake:
			return batch, true
		case <-ctx.Done():
			return nil, true
		}
	}
	deadline := time.NewTimer(w.cfg.BatchWait)
	defer deadline.Stop()
	for room() {
		select {
		case m, ok := <-fetched:
			if !ok {
				return batch, false
			}
			accept(m)
		case <-deadline.C:
			return batch, true
		case <-ctx.Done():
			return batch, true
		}
	}
	return batch, true
}

func dropPartition(items []*item, partition int) []*item {
	out := items[:0]
	for _, it := range items {
		if it.msg.Partition != partition {
			out = append(out, it)
		}
	}
	return out
}

// job is one batch's outputs on their way to the writer stage.
type job struct {
	out, dead []kafka.Message
	finished  []*item // records whose outputs are in out/dead; held records are not here
}

// prepare turns a batch into outputs; records of tenants whose KMS failed go to held.
func (w *Worker) prepare(ctx context.Context, batch []*item, held *[]*item) job {
	defer func() { w.held.Store(int64(len(*held))) }()
	if w.cfg.Mode == ModeIdentity {
		out := make([]kafka.Message, len(batch))
		for i, it := range batch {
			out[i] = kafka.Message{Key: it.msg.Key, Value: it.msg.Value, Headers: it.msg.Headers}
		}
		return job{out: out, finished: batch}
	}
	out, dead, finished := w.transform(ctx, batch, held)
	return job{out: out, dead: dead, finished: finished}
}

// writeLoop writes each job, marks its records finished, and commits at most every
// commitInterval (and once more when jobs closes). It returns only when a write is abandoned at
// shutdown (its inputs stay uncommitted) or jobs is closed.
func (w *Worker) writeLoop(ctx context.Context, jobs <-chan job, offs *kafkax.Offsets) error {
	const commitInterval = 100 * time.Millisecond
	last := time.Now()
	for j := range jobs {
		if err := w.write(ctx, w.storage, j.out); err != nil {
			return err
		}
		w.written.Add(int64(len(j.out)))
		if err := w.write(ctx, w.dlq, j.dead); err != nil {
			return err
		}
		for _, it := range j.finished {
			offs.Done(it.msg.Partition, it.msg.Offset)
		}
		if time.Since(last) >= commitInterval || len(jobs) == 0 {
			w.commit(ctx, offs)
			last = time.Now()
		}
	}
	w.commit(ctx, offs)
	return nil
}

// transform decodes, classifies and seals a batch. Records whose tenant's KMS failed are appended
// to held with their next due time; the rest are finished.
func (w *Worker) transform(ctx context.Context, batch []*item, held *[]*item) (out, dead []kafka.Message, finished []*item) {
	var toSeal []*item
	var scopes []scope.Scope
	scopeIdx := map[scope.Scope]int{}
	for _, it := range batch {
		if it.event == nil {
			ev, err := message.Unmarshal(it.msg.Value)
			if err != nil {
				dead = append(dead, w.deadLetter(it.msg, err.Error()))
				finished = append(finished, it)
				continue
			}
			it.event = ev
		}
		if !w.dir.Enabled(it.event.TenantId) {
			if w.cfg.Unencrypted == PassThrough {
				out = append(out, w.stored(it.event, &byokv1.StoredMessage{Payload: &byokv1.StoredMessage_PlaintextBody{PlaintextBody: it.event.Body}}))
				w.passed.Add(1)
			} else {
				dead = append(dead, w.deadLetter(it.msg, "tenant "+it.event.TenantId+" has no byok configuration and unencrypted tenants are rejected"))
			}
			finished = append(finished, it)
			continue
		}
		s := message.Scope(it.event)
		if _, ok := scopeIdx[s]; !ok {
			scopeIdx[s] = len(scopes)
			scopes = append(scopes, s)
		}
		toSeal = append(toSeal, it)
	}
	if len(toSeal) == 0 {
		return out, dead, finished
	}

	sealStart := time.Now()
	keys, errs := w.keys.Keys(ctx, scopes)
	// Sealing and encoding are pure CPU: spread them over the cores, keeping batch order.
	sealed := make([]kafka.Message, len(toSeal))
	sealErrs := make([]error, len(toSeal))
	parallel(len(toSeal), func(j int) {
		it := toSeal[j]
		i := scopeIdx[message.Scope(it.event)]
		if sealErrs[j] = errs[i]; sealErrs[j] != nil {
			return
		}
		env, err := keys[i].Seal(it.event.MessageId, it.event.Body)
		if sealErrs[j] = err; err == nil {
			sealed[j] = w.stored(it.event, &byokv1.StoredMessage{Payload: &byokv1.StoredMessage_Envelope{Envelope: env}})
		}
	})
	if w.cfg.ObserveSeal != nil {
		w.cfg.ObserveSeal(len(toSeal), time.Since(sealStart))
	}
	failedTenants := map[string]error{}
	now := time.Now()
	for j, it := range toSeal {
		if err := sealErrs[j]; err != nil {
			// Fail closed: never written unencrypted, never dropped; retried with backoff.
			it.attempts++
			it.due = now.Add(w.backoff(it.attempts))
			*held = append(*held, it)
			w.holdEvents.Add(1)
			failedTenants[it.event.TenantId] = err
			continue
		}
		out = append(out, sealed[j])
		w.encrypted.Add(1)
		finished = append(finished, it)
	}
	for tenant, err := range failedTenants {
		w.log.Warn().Str("tenant_id", tenant).Err(err).Int("held_total", len(*held)).
			Msg("tenant KMS failed; holding its messages and retrying with backoff")
	}
	return out, dead, finished
}

// parallel calls fn(0..n-1), split into one contiguous chunk per core when n is large enough
// to be worth the goroutines.
func parallel(n int, fn func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < 256 || workers < 2 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.RetryMin << min(attempt-1, 20)
	if d <= 0 || d > w.cfg.RetryMax {
		d = w.cfg.RetryMax
	}
	return d
}

func (w *Worker) stored(ev *byokv1.MessageEvent, sm *byokv1.StoredMessage) kafka.Message {
	sm.SchemaVersion = 1
	sm.TenantId, sm.ChatId, sm.MessageId = ev.TenantId, ev.ChatId, ev.MessageId
	sm.SenderId, sm.CreatedAt, sm.ContentType = ev.SenderId, ev.CreatedAt, ev.ContentType
	value, err := proto.Marshal(sm)
	if err != nil {
		panic(fmt.Sprintf("encryptor: marshal StoredMessage: %v", err)) // only on a programming error
	}
	return kafka.Message{
		Key:   kafkax.RecordKey(ev.TenantId, ev.ChatId),
		Value: value,
		Headers: []kafka.Header{
			{Key: kafkax.HeaderMessageID, Value: []byte(ev.MessageId)},
			{Key: kafkax.HeaderTenantID, Value: []byte(ev.TenantId)},
			{Key: kafkax.HeaderSchema, Value: []byte("byok.v1.StoredMessage")},
		},
	}
}

// deadLetter builds a dead-letter record: the reason and where the original is, never its
// payload (a malformed record may still hold a plaintext body). The original stays in the input
// topic at the recorded partition and offset for as long as that topic's retention keeps it.
func (w *Worker) deadLetter(m kafka.Message, reason string) kafka.Message {
	w.dead.Add(1)
	w.log.Warn().Int("partition", m.Partition).Int64("offset", m.Offset).Str("reason", reason).Msg("dead-lettered")
	return kafka.Message{
		Key: m.Key,
		Headers: []kafka.Header{
			{Key: kafkax.HeaderDLQReason, Value: []byte(reason)},
			{Key: kafkax.HeaderDLQSource, Value: []byte(m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10))},
			{Key: kafkax.HeaderDLQRedacted, Value: []byte("true")},
			{Key: "byok-worker-id", Value: []byte(w.cfg.WorkerID)},
		},
	}
}

// write writes msgs, retrying with backoff until they are acknowledged or ctx ends. After a
// partial failure only the records that failed are sent again.
func (w *Worker) write(ctx context.Context, wr *kafka.Writer, msgs []kafka.Message) error {
	backoff := w.cfg.RetryMin
	for len(msgs) > 0 {
		err := wr.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("encryptor: write to %s abandoned at shutdown (inputs stay uncommitted): %w", wr.Topic, ctx.Err())
		}
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) && len(werrs) == len(msgs) {
			failed := msgs[:0:0]
			for i, e := range werrs {
				if e != nil {
					failed = append(failed, msgs[i])
				}
			}
			msgs = failed
		}
		w.log.Warn().Err(err).Str("topic", wr.Topic).Int("records", len(msgs)).Dur("backoff", backoff).Msg("write failed; retrying")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, w.cfg.RetryMax)
	}
	return nil
}

func (w *Worker) commit(ctx context.Context, offs *kafkax.Offsets) {
	c := offs.Committable()
	if len(c) == 0 {
		return
	}
	msgs := make([]kafka.Message, 0, len(c))
	for part, off := range c {
		msgs = append(msgs, kafka.Message{Topic: w.cfg.InputTopic, Partition: part, Offset: off})
	}
	if err := w.reader.CommitMessages(ctx, msgs...); err != nil {
		// After a rebalance the partition may belong to another worker now; it replays from the
		// last commit, and outputs keyed by message id make the replay harmless.
		w.log.Warn().Err(err).Msg("commit failed; records after the last commit will be replayed")
		return
	}
	w.commits.Add(1)
}
