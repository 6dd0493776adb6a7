package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/services/forwarder/forward"
)

const topic = audit.TopicAudit

// newKafka starts an in-process Kafka-protocol broker with the audit topic (6 partitions).
func newKafka(t testing.TB) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

type memSink struct {
	mu     sync.Mutex
	events []*byokv1.AuditEvent
}

func (m *memSink) Write(_ context.Context, _, value []byte) error {
	ev := &byokv1.AuditEvent{}
	if err := proto.Unmarshal(value, ev); err != nil {
		return err
	}
	m.mu.Lock()
	m.events = append(m.events, ev)
	m.mu.Unlock()
	return nil
}

// chainedEvents emits n events through a real audit.Log (ids, hash chains) over the tenants.
func chainedEvents(t testing.TB, worker string, n int, tenants ...string) []*byokv1.AuditEvent {
	t.Helper()
	sink := &memSink{}
	l := audit.NewLog(sink, worker)
	for i := 0; i < n; i++ {
		ev := &byokv1.AuditEvent{
			TenantId: tenants[i%len(tenants)], Provider: "vault", KekId: "byok-kek", Operation: audit.OpUnwrap,
			Scopes:   []*byokv1.AuditScope{{ChatId: fmt.Sprintf("chat-%d", i%40), Day: "2026-12-04"}},
			DekCount: 1, ActorService: "reader", ActorUser: "u-7", Purpose: "render", Result: audit.ResultOK,
			LatencyMs: uint32(i % 9), RequestId: fmt.Sprintf("req-%d", i),
		}
		if err := l.Emit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	return sink.events
}

// publish writes events as audit.KafkaSink does (key = tenant).
func publish(t testing.TB, brokers []string, events []*byokv1.AuditEvent) {
	t.Helper()
	msgs := make([]kafka.Message, len(events))
	for i, ev := range events {
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Key: []byte(ev.TenantId), Value: v}
	}
	w := kafkax.NewWriter(brokers, topic, 1000, time.Millisecond)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("publish %d records: %v", len(msgs), err)
	}
}

// lag is the number of records in the topic after the group's committed offsets.
func lag(t testing.TB, brokers []string, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	parts := []int{0, 1, 2, 3, 4, 5}
	fetched, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	req := map[string][]kafka.OffsetRequest{}
	for _, p := range parts {
		req[topic] = append(req[topic], kafka.LastOffsetOf(p))
	}
	ends, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		t.Fatalf("ListOffsets: %v", err)
	}
	committed := map[int]int64{}
	for _, p := range fetched.Topics[topic] {
		committed[p.Partition] = max(p.CommittedOffset, 0)
	}
	var total int64
	for _, p := range ends.Topics[topic] {
		total += p.LastOffset - committed[p.Partition]
	}
	return total
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// receiver is a tenant's webhook endpoint: it checks every request's signature and idempotency
// key, answers with the status set by fail (or 200), and records what it accepted.
type receiver struct {
	t      testing.TB
	tenant string
	secret []byte
	srv    *httptest.Server

	mu       sync.Mutex
	fail     int // status to answer instead of 200 (0: accept)
	attempts int
	badSig   int
	bodies   [][]byte // every request body, accepted or not
	headers  []http.Header
	seen     map[string]int // event id → times accepted
	events   map[string]forward.Event
}

func newReceiver(t testing.TB, tenant, secret string) *receiver {
	r := &receiver{t: t, tenant: tenant, secret: []byte(secret), seen: map[string]int{}, events: map[string]forward.Event{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	r.bodies = append(r.bodies, body)
	r.headers = append(r.headers, req.Header.Clone())
	if !forward.VerifySignature(r.secret, body, req.Header.Get(forward.HeaderSignature)) {
		r.badSig++
		r.t.Errorf("%s: request with an invalid signature %q", r.tenant, req.Header.Get(forward.HeaderSignature))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var b forward.Batch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		r.t.Errorf("%s: body is not a Batch: %v", r.tenant, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if b.TenantID != r.tenant || req.Header.Get(forward.HeaderTenant) != r.tenant {
		r.t.Errorf("batch for tenant %q (header %q) sent to %s's receiver", b.TenantID, req.Header.Get(forward.HeaderTenant), r.tenant)
	}
	if got, want := req.Header.Get(forward.HeaderIdempotencyKey), forward.IdempotencyKey(b.Events); got != want {
		r.t.Errorf("%s: idempotency key %q, want %q", r.tenant, got, want)
	}
	if got, want := req.Header.Get(forward.HeaderEventRange), b.Events[0].EventID+".."+b.Events[len(b.Events)-1].EventID; got != want {
		r.t.Errorf("%s: event range %q, want %q", r.tenant, got, want)
	}
	if r.fail != 0 {
		w.WriteHeader(r.fail)
		return
	}
	for _, e := range b.Events {
		if e.TenantID != r.tenant {
			r.t.Errorf("%s's receiver got event %s of tenant %s", r.tenant, e.EventID, e.TenantID)
		}
		r.seen[e.EventID]++
		r.events[e.EventID] = e
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setFail(status int) {
	r.mu.Lock()
	r.fail = status
	r.mu.Unlock()
}

func (r *receiver) stats() (distinct, total, attempts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.seen {
		total += n
	}
	return len(r.seen), total, r.attempts
}

// hasAll reports whether every event of tenant r.tenant in events was accepted.
func (r *receiver) hasAll(events []*byokv1.AuditEvent) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range events {
		if ev.TenantId == r.tenant && r.seen[ev.EventId] == 0 {
			return false
		}
	}
	return true
}

func (r *receiver) target(extra string) forward.TargetConfig {
	return forward.TargetConfig{Webhook: &forward.WebhookConfig{URL: r.srv.URL + "/hook" + extra, Secret: string(r.secret)}}
}

func targets(t testing.TB, f forward.TargetsFile) map[string]*forward.Target {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	out, err := forward.ParseTargets(b, func(string) string { return "" })
	if err != nil {
		t.Fatalf("ParseTargets() err = %v", err)
	}
	return out
}

func testConfig(brokers []string, group string) forward.Config {
	return forward.Config{
		Brokers: brokers, Topic: topic, GroupID: group,
		BatchSize: 50, BatchWait: 50 * time.Millisecond, Timeout: 2 * time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 300 * time.Millisecond, RejectedRetry: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, ShutdownTimeout: 2 * time.Second,
	}
}

// start runs a forwarder until the returned stop is called; stop returns Run's error.
func start(t *testing.T, cfg forward.Config, tg map[string]*forward.Target, logs *syncBuffer) (*forward.Forwarder, func() error) {
	t.Helper()
	f, err := forward.New(cfg, tg, zerolog.New(logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("forwarder did not stop within 30s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return f, stop
}
