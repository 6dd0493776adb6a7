package chstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// clickhouseAddr is the native address of a running ClickHouse (scripts/clickhouse.sh start), from
// BYOK_TEST_CLICKHOUSE_ADDR; without it the test is skipped, or fails under
// BYOK_REQUIRE_INTEGRATION=1 (as pkg/internal/testenv does for Kafka and Vault).
func clickhouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("BYOK_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("ClickHouse is required (BYOK_REQUIRE_INTEGRATION=1) but BYOK_TEST_CLICKHOUSE_ADDR is not set; run scripts/clickhouse.sh start")
		}
		t.Skip("ClickHouse not available: set BYOK_TEST_CLICKHOUSE_ADDR (scripts/clickhouse.sh start prints it)")
	}
	return addr
}

// openFresh opens a new, migrated database that is dropped when the test ends.
func openFresh(t testing.TB) *chstore.Store {
	t.Helper()
	addr := clickhouseAddr(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	db := "byok_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	s, err := chstore.Open(ctx, addr, db)
	if err != nil {
		t.Fatalf("Open(%s, %s) err = %v", addr, db, err)
	}
	t.Cleanup(func() {
		_ = s.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		s.Close()
	})
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate() err = %v", err)
	}
	return s
}

// memSink keeps what audit.Log writes, decoded.
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

// chainedEvents emits n events through a real audit.Log (ids, hash chains), spread over tenants
// and over the given times (round robin), each with 1–3 scopes.
func chainedEvents(t testing.TB, n int, tenants []string, times []time.Time) []*byokv1.AuditEvent {
	t.Helper()
	sink := &memSink{}
	l := audit.NewLog(sink, "test-worker")
	ops := []string{audit.OpWrap, audit.OpUnwrap}
	results := []string{audit.ResultOK, audit.ResultOK, audit.ResultOK, audit.ResultDenied}
	for i := 0; i < n; i++ {
		k := 1 + i%3
		ev := &byokv1.AuditEvent{
			Time:     timestamppb.New(times[i%len(times)].Add(time.Duration(i) * time.Millisecond)),
			TenantId: tenants[i%len(tenants)], Provider: "vault", KekId: "byok-kek", KekVersion: "1",
			Operation: ops[i%len(ops)], DekCount: uint32(k), ActorService: "encryptor", Purpose: "encrypt",
			Result: results[i%len(results)], LatencyMs: uint32(i % 17), RequestId: fmt.Sprintf("req-%d", i),
		}
		for j := 0; j < k; j++ {
			ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: fmt.Sprintf("chat-%d", (i+j)%50), Day: "2026-01-02"})
		}
		if ev.Result == audit.ResultDenied {
			ev.ErrorCode = "access_denied"
		}
		if err := l.Emit(context.Background(), ev); err != nil {
			t.Fatalf("Emit() err = %v", err)
		}
	}
	return sink.events
}

func TestMigrationsMatchSchemas(t *testing.T) {
	// schemas/clickhouse is the source; migrations/ holds the copies that are embedded.
	src, err := filepath.Glob("../../schemas/clickhouse/*.sql")
	if err != nil || len(src) == 0 {
		t.Fatalf("no schemas/clickhouse/*.sql found (err %v)", err)
	}
	migs, err := chstore.Migrations()
	if err != nil {
		t.Fatalf("Migrations() err = %v", err)
	}
	embedded := map[string]bool{}
	for _, m := range migs {
		embedded[m.Name] = true
	}
	for _, p := range src {
		name := filepath.Base(p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join("migrations", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("pkg/chstore/migrations/%s differs from schemas/clickhouse/%s; run: cp schemas/clickhouse/*.sql pkg/chstore/migrations/", name, name)
		}
		delete(embedded, name)
	}
	for name := range embedded {
		t.Errorf("pkg/chstore/migrations/%s has no source in schemas/clickhouse/", name)
	}
}

func TestSplitStatements(t *testing.T) {
	got := chstore.SplitStatements("-- comment\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- two\nCREATE VIEW b AS\nSELECT ';' AS s\nFROM a;\nSELECT 1")
	want := []string{"CREATE TABLE a (x UInt8) ENGINE = Memory", "CREATE VIEW b AS\nSELECT ';' AS s\nFROM a", "SELECT 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("SplitStatements() = %q, want %q", got, want)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ttl bool
	}{{"18.16.1", false}, {"19.5.3.8", false}, {"19.6.1.1", true}, {"24.8.4.13", true}} {
		v, err := chstore.ParseVersion(tc.in)
		if err != nil {
			t.Fatalf("ParseVersion(%q) err = %v", tc.in, err)
		}
		if v.SupportsTTL() != tc.ttl {
			t.Errorf("ParseVersion(%q).SupportsTTL() = %v, want %v", tc.in, v.SupportsTTL(), tc.ttl)
		}
	}
	if _, err := chstore.ParseVersion("dev"); err == nil {
		t.Error(`ParseVersion("dev") err = nil, want an error`)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	s := openFresh(t) // migrated once
	ctx := context.Background()
	migs, _ := chstore.Migrations()
	for i := 0; i < 2; i++ {
		ran, err := s.Migrate(ctx)
		if err != nil || len(ran) != 0 {
			t.Fatalf("Migrate() again = %d applied, err %v; want 0, nil", len(ran), err)
		}
	}
	applied, err := s.AppliedMigrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(migs) {
		t.Fatalf("AppliedMigrations() = %d rows, want %d (one per version)", len(applied), len(migs))
	}
	for i, a := range applied {
		if a.Version != migs[i].Version || a.Checksum != migs[i].Checksum {
			t.Errorf("applied[%d] = %d %.8s, want %d %.8s", i, a.Version, a.Checksum, migs[i].Version, migs[i].Checksum)
		}
	}
	var rows uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(len(migs)) {
		t.Errorf("schema_migrations holds %d rows, want %d: versions recorded more than once", rows, len(migs))
	}
	var tables uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name IN ('audit_events', 'audit_events_per_minute', 'audit_events_per_minute_mv', 'audit_per_minute')", s.Database()).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 4 {
		t.Errorf("tables and views created = %d, want 4", tables)
	}
	t.Logf("server %s, %d migrations applied once", s.ServerVersion(), len(applied))
}

func TestMigrateRefusesChangedMigration(t *testing.T) {
	s := openFresh(t)
	ctx := context.Background()
	// Pretend 0001 was applied from a different file.
	b, err := s.Conn().PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, checksum, applied_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(uint32(1), "0001_audit_events.sql", "feed", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := s.Conn().Exec(ctx, "OPTIMIZE TABLE schema_migrations FINAL"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Errorf("Migrate() with a changed migration err = %v, want one naming the change", err)
	}
}

// TestInsertReplayIsDeduplicated inserts every event twice (the second time in other batches, as a
// replay after a crash would) and checks that FINAL results, the rollup, and the hash chains read
// back all see each event exactly once — while a SummingMergeTree rollup, built here for
// comparison, double counts.
func TestInsertReplayIsDeduplicated(t *testing.T) {
	s := openFresh(t)
	ctx := context.Background()
	// The naive design, for contrast: a SummingMergeTree per-minute count behind a view.
	for _, q := range []string{
		"CREATE TABLE naive_per_minute (tenant_id String, minute DateTime('UTC'), events UInt64) ENGINE = SummingMergeTree() PARTITION BY toYYYYMM(minute) ORDER BY (tenant_id, minute)",
		"CREATE MATERIALIZED VIEW naive_per_minute_mv TO naive_per_minute AS SELECT tenant_id, toStartOfMinute(time) AS minute, count() AS events FROM audit_events GROUP BY tenant_id, minute",
	} {
		if err := s.Conn().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	const n = 3000
	tenants := []string{"acme", "globex"}
	jan := time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC) // events straddle a month (partition) boundary
	events := chainedEvents(t, n, tenants, []time.Time{jan, jan.Add(30 * time.Second), jan.Add(2 * time.Minute)})

	if err := s.Insert(ctx, events); err != nil {
		t.Fatalf("Insert() err = %v", err)
	}
	// Replay in a different order and batching: duplicates arrive in other blocks and parts.
	replay := append([]*byokv1.AuditEvent(nil), events...)
	sort.Slice(replay, func(i, j int) bool { return replay[i].EventId > replay[j].EventId })
	for lo := 0; lo < n; lo += 700 {
		if err := s.Insert(ctx, replay[lo:min(lo+700, n)]); err != nil {
			t.Fatalf("Insert(replay) err = %v", err)
		}
	}

	c, err := s.Count(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after replay: stored rows %d, FINAL rows %d, distinct event ids %d", c.Rows, c.Final, c.Distinct)
	if c.Rows < n || c.Rows > 2*n {
		t.Errorf("stored rows = %d, want %d..%d (both copies until a background merge collapses them)", c.Rows, n, 2*n)
	}
	if c.Final != n || c.Distinct != n {
		t.Errorf("FINAL rows = %d, distinct = %d, want %d each", c.Final, c.Distinct, n)
	}
	if dups, err := s.DuplicateEventIDs(ctx); err != nil || len(dups) != 0 {
		t.Errorf("DuplicateEventIDs() = %d ids (%v), err %v; want none", len(dups), dups[:min(3, len(dups))], err)
	}

	var wantDEKs uint64
	for _, ev := range events {
		wantDEKs += uint64(ev.DekCount)
	}
	checkRollup := func(when string) {
		t.Helper()
		stats, err := s.PerMinute(ctx, "", jan.Add(-time.Hour), jan.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var evs, deks uint64
		for _, m := range stats {
			evs += m.Events
			deks += m.DEKs
		}
		var naive uint64
		if err := s.Conn().QueryRow(ctx, "SELECT sum(events) FROM naive_per_minute").Scan(&naive); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: rollup events %d, DEKs %d (want %d, %d); SummingMergeTree rollup events %d", when, evs, deks, n, wantDEKs, naive)
		if evs != n || deks != wantDEKs {
			t.Errorf("%s: rollup events = %d, DEKs = %d, want %d, %d", when, evs, deks, n, wantDEKs)
		}
		if naive != 2*n {
			t.Errorf("%s: the SummingMergeTree comparison counted %d, expected it to double count (%d)", when, naive, 2*n)
		}
		if len(stats) < 2*len(tenants) {
			t.Errorf("%s: %d rollup rows, want rows per tenant × minute × operation × result", when, len(stats))
		}
	}
	checkRollup("before merge")

	// Read back and re-verify every hash chain: storage kept every hashed field.
	back, err := s.Events(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != n {
		t.Fatalf("Events() = %d, want %d", len(back), n)
	}
	for _, r := range audit.Verify(back) {
		if r.Problem != "" || r.Events != n/len(tenants) {
			t.Errorf("chain %s/%s read back from ClickHouse: %d events, problem %q", r.TenantID, r.WorkerID, r.Events, r.Problem)
		}
	}
	byID := map[string]*byokv1.AuditEvent{}
	for _, ev := range events {
		byID[ev.EventId] = ev
	}
	for _, ev := range back[:10] {
		if !proto.Equal(ev, byID[ev.EventId]) {
			t.Errorf("event %s read back = %v, want %v", ev.EventId, ev, byID[ev.EventId])
		}
	}

	// After merges the replayed rows are gone for good; the rollup still counts each event once.
	if err := s.Optimize(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ = s.Count(ctx, ""); c.Rows != n {
		t.Errorf("stored rows after OPTIMIZE FINAL = %d, want %d", c.Rows, n)
	}
	checkRollup("after merge")
}

func TestInsertRejectsInvalidEvents(t *testing.T) {
	s := openFresh(t)
	ok := chainedEvents(t, 1, []string{"acme"}, []time.Time{time.Now()})[0]
	for name, ev := range map[string]*byokv1.AuditEvent{
		"no event id": {TenantId: "acme", Time: timestamppb.Now()},
		"no tenant":   {EventId: "e", Time: timestamppb.Now()},
		"no time":     {EventId: "e", TenantId: "acme"},
	} {
		if err := chstore.CheckEvent(ev); err == nil {
			t.Errorf("CheckEvent(%s) = nil, want an error", name)
		}
		if err := s.Insert(context.Background(), []*byokv1.AuditEvent{ok, ev}); err == nil {
			t.Errorf("Insert(valid, %s) = nil, want an error", name)
		}
	}
	if c, _ := s.Count(context.Background(), ""); c.Rows != 0 {
		t.Errorf("rows after rejected inserts = %d, want 0 (whole batch rejected)", c.Rows)
	}
}

func TestApplyRetention(t *testing.T) {
	s := openFresh(t)
	ctx := context.Background()
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	old := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)    // month ended > 90 days before now
	recent := time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC) // month ended < 90 days before now
	events := chainedEvents(t, 30, []string{"acme"}, []time.Time{old, recent, now})
	if err := s.Insert(ctx, events); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.ApplyRetention(ctx, 0, now); err != nil || len(rep.Dropped) != 0 {
		t.Fatalf("ApplyRetention(0) = %+v, %v; want nothing dropped", rep, err)
	}
	rep, err := s.ApplyRetention(ctx, 90*24*time.Hour, now)
	if err != nil {
		t.Fatalf("ApplyRetention(90d) err = %v", err)
	}
	want := []string{"audit_events/202601", "audit_events_per_minute/202601"}
	if fmt.Sprint(rep.Dropped) != fmt.Sprint(want) {
		t.Errorf("ApplyRetention(90d).Dropped = %v, want %v", rep.Dropped, want)
	}
	if rep.TTL != s.ServerVersion().SupportsTTL() {
		t.Errorf("ApplyRetention TTL = %v on server %s", rep.TTL, s.ServerVersion())
	}
	if c, _ := s.Count(ctx, ""); c.Final != 20 {
		t.Errorf("events left = %d, want 20 (March and June)", c.Final)
	}
	stats, _ := s.PerMinute(ctx, "", old.Add(-time.Hour), now.Add(time.Hour))
	for _, m := range stats {
		if m.Minute.Before(recent.Add(-24 * time.Hour)) {
			t.Errorf("rollup row %v survived retention", m.Minute)
		}
	}
	// Idempotent.
	if rep, err := s.ApplyRetention(ctx, 90*24*time.Hour, now); err != nil || len(rep.Dropped) != 0 {
		t.Errorf("ApplyRetention again = %+v, %v; want nothing more dropped", rep, err)
	}
}

// BenchmarkInsert10k measures batch inserts of 10,000 events (the auditor's default flush size)
// on the real server, with the per-minute rollup view (as deployed) and without it (its cost).
func BenchmarkInsert10k(b *testing.B) {
	for _, rollup := range []bool{true, false} {
		name := map[bool]string{true: "with-rollup", false: "without-rollup"}[rollup]
		b.Run(name, func(b *testing.B) {
			s := openFresh(b)
			if !rollup {
				if err := s.Conn().Exec(context.Background(), "DROP TABLE audit_events_per_minute_mv"); err != nil {
					b.Fatal(err)
				}
			}
			const batch = 10_000
			base := chainedEvents(b, batch, []string{"acme", "globex", "initech", "umbrella"}, []time.Time{time.Now()})
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := s.Insert(context.Background(), base); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// TestEveryAuditEventFieldHasAColumn fails when a field is added to AuditEvent without a column
// (and a migration) to hold it: the hash chain covers every field, so dropping one would make
// stored events unverifiable.
func TestEveryAuditEventFieldHasAColumn(t *testing.T) {
	s := openFresh(t)
	rows, err := s.Conn().Query(context.Background(), "SELECT name FROM system.columns WHERE database = ? AND table = 'audit_events'", s.Database())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		cols[n] = true
	}
	fields := (&byokv1.AuditEvent{}).ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		name := string(fields.Get(i).Name())
		want := map[string][]string{"time": {"time", "time_nanos"}, "scopes": {"scope_chat_ids", "scope_days"}}[name]
		if want == nil {
			want = []string{name}
		}
		for _, c := range want {
			if !cols[c] {
				t.Errorf("AuditEvent field %s has no audit_events column %s: add a migration in schemas/clickhouse", name, c)
			}
		}
	}
}

// TestEventRoundTrip stores an event with every field set and reads back an identical message.
func TestEventRoundTrip(t *testing.T) {
	s := openFresh(t)
	ev := chainedEvents(t, 1, []string{"acme"}, []time.Time{time.Date(2026, 12, 4, 10, 11, 12, 123456789, time.UTC)})[0]
	ev.KekVersion, ev.ActorUser, ev.ErrorCode, ev.FailedItems, ev.LatencyMs = "7", "u-42", "access_denied", 2, 31
	ev.PrevHash = bytes.Repeat([]byte{0, 0xff}, 16) // binary, with NUL bytes
	ev.Hash = audit.Hash(ev)
	if err := s.Insert(context.Background(), []*byokv1.AuditEvent{ev}); err != nil {
		t.Fatal(err)
	}
	back, err := s.Events(context.Background(), "acme")
	if err != nil || len(back) != 1 {
		t.Fatalf("Events() = %d events, err %v; want 1", len(back), err)
	}
	if !proto.Equal(back[0], ev) {
		t.Errorf("read back\n%v\nwant\n%v", back[0], ev)
	}
}
