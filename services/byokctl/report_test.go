package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

type discardSink struct{}

func (discardSink) Write(context.Context, []byte, []byte) error { return nil }

func TestAuditReportFailsWithoutClickHouse(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"audit", "report", "-clickhouse", "127.0.0.1:1", "-timeout", "10s"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "clickhouse") {
		t.Fatalf("audit report with no server = %d, %q %q; want 1 and the reason", code, out.String(), errOut.String())
	}
	if code := run(context.Background(), []string{"audit", "report", "-now", "yesterday"}, &out, &errOut); code != 2 {
		t.Fatalf("audit report -now yesterday = %d, want 2", code)
	}
}

func TestAuditReport(t *testing.T) {
	addr := os.Getenv("BYOK_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("ClickHouse is required (BYOK_REQUIRE_INTEGRATION=1) but BYOK_TEST_CLICKHOUSE_ADDR is not set; run scripts/clickhouse.sh start")
		}
		t.Skip("ClickHouse not available: set BYOK_TEST_CLICKHOUSE_ADDR (scripts/clickhouse.sh start prints it)")
	}
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	db := "byok_test_" + hex.EncodeToString(b[:])
	s, err := chstore.Open(ctx, addr, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		s.Close()
	})
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	now := time.Date(2026, 3, 12, 14, 30, 0, 0, time.UTC)
	log := audit.NewLog(discardSink{}, "byokctl-test")
	var events []*byokv1.AuditEvent
	add := func(at time.Time, user, result, code, chat string) {
		ev := &byokv1.AuditEvent{Time: timestamppb.New(at), TenantId: "acme", Provider: "vault", KekId: "kek",
			Operation: audit.OpUnwrap, DekCount: 1, ActorService: "reader", ActorUser: user, Purpose: "render",
			Result: result, ErrorCode: code, Scopes: []*byokv1.AuditScope{{ChatId: chat, Day: "2026-03-01"}}}
		if err := log.Emit(ctx, ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	for d := 1; d <= 7; d++ { // a week of alice reading during the day
		for m := 0; m < 30; m++ {
			add(now.AddDate(0, 0, -d).Add(time.Duration(m)*time.Minute), "alice", audit.ResultOK, "", "chat-1")
		}
	}
	for i := 0; i < 3; i++ { // mallory tries a revoked chat
		add(now.Add(-10*time.Minute+time.Duration(i)*time.Second), "mallory", audit.ResultDenied, "scope_revoked", "chat-666")
	}
	if err := s.Insert(ctx, events); err != nil {
		t.Fatal(err)
	}

	report := func(extra ...string) (int, string) {
		var out, errOut bytes.Buffer
		args := append([]string{"audit", "report", "-clickhouse", addr, "-clickhouse-database", db, "-now", now.Format(time.RFC3339)}, extra...)
		code := run(ctx, args, &out, &errOut)
		t.Logf("byokctl %s:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
		return code, out.String()
	}
	code, out := report()
	if code != 0 {
		t.Fatalf("audit report = %d, want 0 (findings are not an error)", code)
	}
	section := func(name string) string {
		_, rest, _ := strings.Cut(out, "== "+name+":")
		sec, _, _ := strings.Cut(rest, "\n== ")
		return sec
	}
	if sec := section("revoked_scope_attempts"); !strings.Contains(sec, "TENANT") || !strings.Contains(sec, "mallory") ||
		!strings.Contains(sec, "chat-666") || !strings.Contains(sec, "2026-03-12 14:20:00") {
		t.Errorf("revoked_scope_attempts section = %q, want a table with acme, mallory, chat-666 at 14:20:00", sec)
	}
	if sec := section("new_actors"); !strings.Contains(sec, "mallory") || strings.Contains(sec, "alice") {
		t.Errorf("new_actors section = %q, want mallory (never seen before) and not alice", sec)
	}
	for _, q := range []string{"unwrap_spikes", "failure_bursts", "off_hours", "unusual_batches", "control_changes"} {
		if sec := section(q); !strings.Contains(sec, "no findings") {
			t.Errorf("%s section = %q, want no findings", q, sec)
		}
	}
	if !strings.Contains(out, "window 2026-03-12 13:30:00 – 2026-03-12 14:30:00 UTC") || !strings.Contains(out, "2 findings from 7 queries") {
		t.Errorf("report header/footer wrong:\n%s", out)
	}

	if code, out := report("-tenant", "globex", "-window", "30m", "-baseline", "72h"); code != 0 || strings.Count(out, "no findings") != 7 {
		t.Errorf("audit report -tenant globex = %d, want 0 and seven \"no findings\":\n%s", code, out)
	}
}
