package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/services/auditor/consumer"
)

const topic = audit.TopicAudit

func testConfig(brokers []string, group string) consumer.Config {
	return consumer.Config{
		Brokers: brokers, Topic: topic, GroupID: group,
		FlushCount: 1000, FlushInterval: 200 * time.Millisecond,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
		SessionTimeout: 6 * time.Second, ShutdownTimeout: 5 * time.Second,
	}
}

// start runs a consumer until the returned stop is called; stop returns Run's error.
func start(t *testing.T, cfg consumer.Config, store consumer.Store, logs *syncBuffer) (*consumer.Consumer, func() error) {
	t.Helper()
	c, err := consumer.New(cfg, store, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("consumer did not stop within 30s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return c, stop
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  consumer.Config
		want string
	}{
		{"no brokers", consumer.Config{}, "brokers"},
		{"negative count", consumer.Config{Brokers: []string{"b"}, FlushCount: -1}, "flush-count"},
		{"negative bytes", consumer.Config{Brokers: []string{"b"}, FlushBytes: -1}, "flush-bytes"},
		{"negative interval", consumer.Config{Brokers: []string{"b"}, FlushInterval: -time.Second}, "flush-interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestEndToEnd publishes events (some through the real audit.KafkaSink, most in bulk) and a few
// bad records; every event must land in ClickHouse exactly once, the bad records must be counted,
// committed and never logged with their payload, and the group must have no lag at the end.
func TestEndToEnd(t *testing.T) {
	s := freshStore(t, clickhouseAddr(t))
	brokers := newKafka(t, topic)

	// 200 events through the production path: audit.Log → KafkaSink (acks=all).
	sink := audit.NewKafkaSink(brokers, topic)
	l := audit.NewLog(sink, "encryptor-1")
	var events []*byokv1.AuditEvent
	for i := 0; i < 200; i++ {
		ev := &byokv1.AuditEvent{TenantId: []string{"acme", "globex"}[i%2], Provider: "vault", KekId: "k",
			Operation: audit.OpWrap, DekCount: 2, ActorService: "encryptor", Purpose: "encrypt", Result: audit.ResultOK}
		if err := l.Emit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	sink.Close()
	// 5,000 more in bulk, from another emitter.
	bulk := chainedEvents(t, "reader-1", 5000, "acme", "globex", "initech", "umbrella", "hooli")
	events = append(events, bulk...)
	publish(t, brokers, topic, records(t, bulk))

	// Bad records: not protobuf (with a canary that must never reach a log), and an event with no id.
	canary := []byte("CANARY-9f3c1d-secret-payload")
	noID, _ := proto.Marshal(&byokv1.AuditEvent{TenantId: "acme", Time: timestamppb.Now(), RequestId: string(canary)})
	publish(t, brokers, topic, []kafka.Message{
		{Key: []byte("acme"), Value: append([]byte{0x0f}, canary...)},
		{Key: []byte("acme"), Value: append([]byte{0xff, 0xff, 0xff}, canary...)},
		{Key: []byte("globex"), Value: noID},
	})

	logs := &syncBuffer{}
	c, stop := start(t, testConfig(brokers, "auditor-e2e"), s, logs)
	waitFor(t, 60*time.Second, "all events in ClickHouse", func() bool {
		n, err := s.Count(context.Background(), "")
		return err == nil && n.Final >= uint64(len(events)) && c.Stats().Consumed >= int64(len(events)+3)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil after a clean stop", err)
	}
	checkExactlyOnce(t, s, events)
	st := c.Stats()
	t.Logf("stats %+v", st)
	if st.Undecodable != 2 || st.Invalid != 1 {
		t.Errorf("Undecodable = %d, Invalid = %d, want 2 and 1", st.Undecodable, st.Invalid)
	}
	if l := lag(t, brokers, "auditor-e2e", topic); l != 0 {
		t.Errorf("group lag after stop = %d, want 0 (everything stored or skipped is committed)", l)
	}
	if bytes.Contains(logs.Bytes(), canary) {
		t.Error("a record's payload appeared in the log")
	}
	if !bytes.Contains(logs.Bytes(), []byte("record is not an AuditEvent")) {
		t.Error("undecodable records were not logged")
	}
}

// crashingStore stores the crashAt-th batch and then never reports success (as if the process
// died between insert and commit).
type crashingStore struct {
	inner    consumer.Store
	crashAt  int32
	calls    atomic.Int32
	inserted atomic.Int64
	crashed  chan struct{}
}

func (c *crashingStore) Insert(ctx context.Context, events []*byokv1.AuditEvent) error {
	if err := c.inner.Insert(ctx, events); err != nil {
		return err
	}
	c.inserted.Add(int64(len(events)))
	if c.calls.Add(1) == c.crashAt {
		close(c.crashed)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// TestCrashBeforeCommitReplays stops a consumer after it stored batches but before it committed
// the last one; a new consumer in the group replays the uncommitted records, and ClickHouse still
// holds each event exactly once in FINAL results.
func TestCrashBeforeCommitReplays(t *testing.T) {
	s := freshStore(t, clickhouseAddr(t))
	brokers := newKafka(t, topic)
	events := chainedEvents(t, "encryptor-7", 6000, "acme", "globex", "initech")
	publish(t, brokers, topic, records(t, events))

	cfg := testConfig(brokers, "auditor-crash")
	cfg.ShutdownTimeout = 300 * time.Millisecond
	crashing := &crashingStore{inner: s, crashAt: 3, crashed: make(chan struct{})}
	first, stop := start(t, cfg, crashing, &syncBuffer{})
	select {
	case <-crashing.crashed:
	case <-time.After(60 * time.Second):
		t.Fatal("the first consumer never reached its third batch")
	}
	if err := stop(); !errors.Is(err, consumer.ErrAbandoned) {
		t.Fatalf("Run() after a crash before commit = %v, want ErrAbandoned", err)
	}
	before := lag(t, brokers, "auditor-crash", topic)
	t.Logf("crashed after storing %d events; %d records uncommitted (first consumer: %+v)", crashing.inserted.Load(), before, first.Stats())
	if before == 0 || crashing.inserted.Load()+before <= int64(len(events)) {
		t.Fatalf("lag after the crash = %d with %d stored: the test did not leave stored records uncommitted", before, crashing.inserted.Load())
	}

	second, stop2 := start(t, testConfig(brokers, "auditor-crash"), s, &syncBuffer{})
	waitFor(t, 60*time.Second, "the replay to finish", func() bool { return lag(t, brokers, "auditor-crash", topic) == 0 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	replayed := crashing.inserted.Load() + second.Stats().Inserted - int64(len(events))
	t.Logf("events inserted twice by the replay: %d", replayed)
	if replayed <= 0 {
		t.Errorf("no event was inserted twice: the replay path was not exercised")
	}
	checkExactlyOnce(t, s, events)
}

// TestClickHouseOutage stops a (private) ClickHouse server for 30 s — the outage the issue names —
// while events keep arriving; the consumer must retry without committing and, once the server is
// back, store every event exactly once.
func TestClickHouseOutage(t *testing.T) {
	ch := startOwnClickHouse(t)
	s := freshStore(t, ch.addr)
	brokers := newKafka(t, topic)
	events := chainedEvents(t, "encryptor-3", 4000, "acme", "globex")
	recs := records(t, events)

	c, stop := start(t, testConfig(brokers, "auditor-outage"), s, &syncBuffer{})
	// Publish 100 records every 200 ms (8 s in all) in the background.
	published := make(chan struct{})
	go func() {
		defer close(published)
		for lo := 0; lo < len(recs); lo += 100 {
			publish(t, brokers, topic, recs[lo:lo+100])
			time.Sleep(200 * time.Millisecond)
		}
	}()
	waitFor(t, 30*time.Second, "the first batches to be stored", func() bool { return c.Stats().Batches >= 2 })
	ch.run("stop")
	outageStart := time.Now()
	stored := c.Stats().Inserted
	time.Sleep(30 * time.Second)
	<-published
	st := c.Stats()
	lagDuring := lag(t, brokers, "auditor-outage", topic)
	t.Logf("after %v of outage: %+v, lag %d", time.Since(outageStart).Round(time.Second), st, lagDuring)
	if st.InsertFailures == 0 {
		t.Error("no insert failed while ClickHouse was down")
	}
	if st.Inserted > stored+1000 { // at most one batch in flight when the server stopped
		t.Errorf("events stored during the outage = %d", st.Inserted-stored)
	}
	if lagDuring < int64(len(events))-st.Inserted {
		t.Errorf("lag during the outage = %d, want >= %d (nothing unstored may be committed)", lagDuring, int64(len(events))-st.Inserted)
	}
	ch.run("start")
	waitFor(t, 60*time.Second, "the backlog to be stored", func() bool { return lag(t, brokers, "auditor-outage", topic) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("everything stored %v after the outage began: %+v", time.Since(outageStart).Round(time.Second), c.Stats())
	checkExactlyOnce(t, s, events)
}
