package consumer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
)

// clickhouseAddr is the native address of a running ClickHouse (scripts/clickhouse.sh start), from
// BYOK_TEST_CLICKHOUSE_ADDR; without it the test is skipped, or fails under
// BYOK_REQUIRE_INTEGRATION=1 (services cannot import pkg/internal/testenv, hence this copy).
func clickhouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("BYOK_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("ClickHouse is required (BYOK_REQUIRE_INTEGRATION=1) but BYOK_TEST_CLICKHOUSE_ADDR is not set; run scripts/clickhouse.sh start")
		}
		t.Skip("ClickHouse not available: set BYOK_TEST_CLICKHOUSE_ADDR (scripts/clickhouse.sh start)")
	}
	return addr
}

// freshStore opens a new, migrated database at addr, dropped when the test ends.
func freshStore(t testing.TB, addr string) *chstore.Store {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	db := "byok_test_" + hex.EncodeToString(b[:])
	s, err := chstore.Open(context.Background(), addr, db)
	if err != nil {
		t.Fatalf("chstore.Open(%s) err = %v", addr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+db)
		s.Close()
	})
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate() err = %v", err)
	}
	return s
}

// newKafka starts an in-process Kafka-protocol broker with the audit topic (6 partitions).
func newKafka(t testing.TB, topic string) []string {
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

// records turns events into audit-topic records as audit.KafkaSink writes them.
func records(t testing.TB, events []*byokv1.AuditEvent) []kafka.Message {
	t.Helper()
	out := make([]kafka.Message, len(events))
	for i, ev := range events {
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = kafka.Message{Key: []byte(ev.TenantId), Value: v,
			Headers: []kafka.Header{{Key: kafkax.HeaderSchema, Value: []byte("byok.v1.AuditEvent")}}}
	}
	return out
}

func publish(t testing.TB, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	w := kafkax.NewWriter(brokers, topic, 1000, time.Millisecond)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("publish %d records: %v", len(msgs), err)
	}
}

// lag is the number of records in topic after the group's committed offsets.
func lag(t testing.TB, brokers []string, group, topic string) int64 {
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

// checkExactlyOnce asserts that the store holds exactly the given events, each once in FINAL
// results, with intact hash chains and a rollup that counts each once.
func checkExactlyOnce(t testing.TB, s *chstore.Store, events []*byokv1.AuditEvent) {
	t.Helper()
	ctx := context.Background()
	c, err := s.Count(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(len(events))
	if c.Final != n || c.Distinct != n {
		t.Errorf("FINAL rows = %d, distinct event ids = %d, want %d each (stored rows %d)", c.Final, c.Distinct, n, c.Rows)
	}
	if dups, err := s.DuplicateEventIDs(ctx); err != nil || len(dups) > 0 {
		t.Errorf("DuplicateEventIDs() = %d ids, err %v; want none", len(dups), err)
	}
	back, err := s.Events(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, ev := range events {
		want[ev.EventId] = true
	}
	for _, ev := range back {
		if !want[ev.EventId] {
			t.Errorf("unexpected event %s in ClickHouse", ev.EventId)
		}
	}
	for _, r := range audit.Verify(back) {
		if r.Problem != "" {
			t.Errorf("chain %s/%s read back: %s", r.TenantID, r.WorkerID, r.Problem)
		}
	}
	stats, err := s.PerMinute(ctx, "", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var rolled uint64
	for _, m := range stats {
		rolled += m.Events
	}
	if rolled != n {
		t.Errorf("per-minute rollup counts %d events, want %d", rolled, n)
	}
	t.Logf("ClickHouse: %d events once each in FINAL (stored rows %d), rollup %d, chains intact", c.Final, c.Rows, rolled)
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

// ownClickHouse starts a private ClickHouse server with scripts/clickhouse.sh (state in a temp
// dir, free ports) that the test may stop and start; it is stopped at cleanup.
type ownClickHouse struct {
	t      testing.TB
	script string
	env    []string
	addr   string
}

func startOwnClickHouse(t testing.TB) *ownClickHouse {
	t.Helper()
	clickhouseAddr(t) // same gate as every ClickHouse test
	script, err := filepath.Abs("../../../scripts/clickhouse.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The server runs as user clickhouse when the script runs as root: let it reach the state dir.
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	native, http := freePort(t), freePort(t)
	ch := &ownClickHouse{t: t, script: script, addr: "127.0.0.1:" + strconv.Itoa(native),
		env: append(os.Environ(), "BYOK_RUN="+dir, "CLICKHOUSE_PORT="+strconv.Itoa(native), "CLICKHOUSE_HTTP_PORT="+strconv.Itoa(http))}
	ch.run("start")
	t.Cleanup(func() { ch.run("stop") })
	return ch
}

func (c *ownClickHouse) run(cmd string) {
	c.t.Helper()
	x := exec.Command(c.script, cmd)
	x.Env = c.env
	out, err := x.CombinedOutput()
	if err != nil {
		c.t.Fatalf("clickhouse.sh %s: %v\n%s", cmd, err, out)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
