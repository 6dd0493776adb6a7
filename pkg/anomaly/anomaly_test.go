package anomaly_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/anomaly"
	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// now is the fixed "current time" of every test: a Thursday, 14:30 UTC, inside business hours.
var now = time.Date(2026, 3, 12, 14, 30, 0, 0, time.UTC)

// clickhouseAddr is the native address of a running ClickHouse (scripts/clickhouse.sh start), from
// BYOK_TEST_CLICKHOUSE_ADDR; without it the test is skipped, or fails under
// BYOK_REQUIRE_INTEGRATION=1.
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

type discard struct{}

func (discard) Write(context.Context, []byte, []byte) error { return nil }

// gen builds events with real ids and hash chains (audit.Log), deterministic content.
type gen struct {
	t      testing.TB
	log    *audit.Log
	rng    *mrand.Rand
	events []*byokv1.AuditEvent
	scopes []*byokv1.AuditScope // if set, the next add uses these scopes
}

func newGen(t testing.TB) *gen {
	return &gen{t: t, log: audit.NewLog(discard{}, "enc-test"), rng: mrand.New(mrand.NewPCG(1, 2))}
}

// add records one call at time at with n DEKs of random chats of tenant on at's day.
func (g *gen) add(tenant string, at time.Time, op, service, user, purpose string, n int, result, code string) {
	ev := &byokv1.AuditEvent{
		Time: timestamppb.New(at), TenantId: tenant, Provider: "vault", KekId: tenant + "-kek", KekVersion: "3",
		Operation: op, DekCount: uint32(n), ActorService: service, ActorUser: user, Purpose: purpose,
		Result: result, ErrorCode: code, LatencyMs: uint32(2 + g.rng.IntN(20)), RequestId: fmt.Sprintf("req-%d", len(g.events)),
	}
	if result == audit.ResultError {
		ev.FailedItems = uint32(n)
	}
	ev.Scopes, g.scopes = g.scopes, nil
	for i := len(ev.Scopes); i < n; i++ {
		ev.Scopes = append(ev.Scopes, &byokv1.AuditScope{ChatId: fmt.Sprintf("%s-chat-%d", tenant, g.rng.IntN(50)), Day: at.Format(time.DateOnly)})
	}
	if err := g.log.Emit(context.Background(), ev); err != nil {
		g.t.Fatal(err)
	}
	g.events = append(g.events, ev)
}

var (
	tenants = []struct {
		id   string
		rate int // calls per business minute, roughly
	}{{"acme", 4}, {"globex", 2}, {"initech", 1}}
	readers = []string{"alice", "bob", "carol", "dave"}
)

// background is 8 days of ordinary traffic up to now: business hours 08:00–17:59 UTC every day,
// the encryptor wrapping 1–4 DEKs, a reader unwrapping 1–8 for a stable set of users, a search
// indexer unwrapping 5–20 every ten minutes, and rare denials and KMS errors.
func (g *gen) background() {
	start := now.Truncate(24*time.Hour).AddDate(0, 0, -8)
	for m := start; m.Before(now); m = m.Add(time.Minute) {
		if h := m.Hour(); h < 8 || h >= 18 {
			continue
		}
		for _, tn := range tenants {
			calls := tn.rate/2 + g.rng.IntN(tn.rate+1)
			for i := 0; i < calls; i++ {
				at := m.Add(time.Duration(g.rng.IntN(60_000)) * time.Millisecond)
				result, code := audit.ResultOK, ""
				switch r := g.rng.IntN(1000); {
				case r < 3:
					result, code = audit.ResultError, "unavailable"
				case r < 5:
					result, code = audit.ResultDenied, "access_denied"
				}
				if g.rng.IntN(2) == 0 {
					g.add(tn.id, at, audit.OpWrap, "encryptor", "", "encrypt", 1+g.rng.IntN(4), result, code)
				} else {
					g.add(tn.id, at, audit.OpUnwrap, "reader", readers[g.rng.IntN(len(readers))], "render", 1+g.rng.IntN(8), result, code)
				}
			}
			if m.Minute()%10 == 0 {
				g.add(tn.id, m.Add(30*time.Second), audit.OpUnwrap, "search-indexer", "", "search-index", 5+g.rng.IntN(16), audit.ResultOK, "")
			}
		}
	}
}

func (g *gen) insert(s *chstore.Store) {
	g.t.Helper()
	if err := s.Insert(context.Background(), g.events); err != nil {
		g.t.Fatalf("Insert(%d events) err = %v", len(g.events), err)
	}
}

// fixture is a fresh database holding the background traffic plus whatever plant adds.
func fixture(t *testing.T, plant func(g *gen)) *chstore.Store {
	t.Helper()
	s := openFresh(t)
	g := newGen(t)
	g.background()
	if plant != nil {
		plant(g)
	}
	g.insert(s)
	t.Logf("%d events", len(g.events))
	return s
}

type anomalyCase struct {
	query string
	now   time.Time                                // zero: now
	plant func(g *gen)                             // the anomaly, inside the window
	check func(t *testing.T, fs []anomaly.Finding) // what must be found
}

var cases = []anomalyCase{
	{
		query: "unwrap_spikes",
		plant: func(g *gen) {
			minute := now.Add(-20 * time.Minute)
			for i := 0; i < 30; i++ {
				g.add("acme", minute.Add(time.Duration(i)*time.Second), audit.OpUnwrap, "reader", "alice", "render", 10, audit.ResultOK, "")
			}
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "acme", now.Add(-20*time.Minute))
			if d := num(t, f, "unwrapped_deks"); d < 300 || d > 400 { // 300 planted + the minute's usual few
				t.Errorf("unwrapped_deks = %v, want 300 + a few", d)
			}
		},
	},
	{
		// Reads served from a reader's DEK cache are decryptions too: a bulk read from the cache
		// is a spike like one through the KMS.
		query: "unwrap_spikes",
		plant: func(g *gen) {
			minute := now.Add(-25 * time.Minute)
			for i := 0; i < 30; i++ {
				g.add("acme", minute.Add(time.Duration(i)*time.Second), "read_cached", "reader", "alice", "render", 10, audit.ResultOK, "")
			}
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "acme", now.Add(-25*time.Minute))
			if d := num(t, f, "unwrapped_deks"); d < 300 || d > 400 {
				t.Errorf("unwrapped_deks = %v, want 300 cached reads + the minute's usual few", d)
			}
		},
	},
	{
		query: "control_changes",
		plant: func(g *gen) {
			g.add("globex", now.Add(-40*time.Minute), audit.OpSettingsChange, "settings", "alice", "disable", 0, audit.ResultOK, "")
			g.scopes = []*byokv1.AuditScope{{ChatId: "globex-chat-7", Day: "2026-03-01..2026-03-31"}}
			g.add("globex", now.Add(-35*time.Minute), audit.OpRevoke, "settings", "alice", "chat_days", 1, audit.ResultOK, "")
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			if len(fs) != 2 {
				t.Fatalf("findings = %+v, want the settings change and the revocation", fs)
			}
			c, r := fs[0], fs[1]
			if c.TenantID != "globex" || !c.At.Equal(now.Add(-40*time.Minute)) || c.Field("operation") != audit.OpSettingsChange ||
				c.Field("purpose") != "disable" || c.Field("actor_user") != "alice" || c.Field("result") != audit.ResultOK {
				t.Errorf("first finding = %s at %v, want globex settings_change disable by alice", c.Detail, c.At)
			}
			if r.Field("operation") != audit.OpRevoke || r.Field("chats") != "globex-chat-7" || r.Field("days") != "2026-03-01..2026-03-31" {
				t.Errorf("second finding = %s, want the revocation of globex-chat-7 for March", r.Detail)
			}
		},
	},
	{
		query: "failure_bursts",
		plant: func(g *gen) {
			minute := now.Add(-10 * time.Minute)
			for i := 0; i < 25; i++ {
				g.add("globex", minute.Add(time.Duration(2*i)*time.Second), audit.OpUnwrap, "reader", "bob", "render", 2, audit.ResultDenied, "access_denied")
			}
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "globex", now.Add(-10*time.Minute))
			if d := num(t, f, "denied"); d < 25 || d > 27 {
				t.Errorf("denied = %v, want 25 (+ background noise)", d)
			}
		},
	},
	{
		query: "new_actors",
		plant: func(g *gen) {
			for i := 0; i < 3; i++ {
				g.add("initech", now.Add(-15*time.Minute+time.Duration(i)*time.Minute), audit.OpUnwrap, "exporter", "eve", "export", 8, audit.ResultOK, "")
			}
			// A known service with a known user but a purpose it never had: also new.
			g.add("acme", now.Add(-5*time.Minute), audit.OpUnwrap, "reader", "alice", "export", 2, audit.ResultOK, "")
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			if len(fs) != 2 {
				t.Fatalf("findings = %v, want 2 (initech exporter/eve, acme reader/alice export)", fs)
			}
			a, i := fs[0], fs[1] // ordered by tenant
			if a.TenantID != "acme" || a.Field("actor_service") != "reader" || a.Field("actor_user") != "alice" || a.Field("purpose") != "export" || !a.At.Equal(now.Add(-5*time.Minute)) {
				t.Errorf("finding = %+v, want acme reader/alice export at %v", a, now.Add(-5*time.Minute))
			}
			if i.TenantID != "initech" || i.Field("actor_service") != "exporter" || i.Field("actor_user") != "eve" || i.Field("calls") != "3" || !i.At.Equal(now.Add(-15*time.Minute)) {
				t.Errorf("finding = %+v, want initech exporter/eve, 3 calls from %v", i, now.Add(-15*time.Minute))
			}
		},
	},
	{
		query: "off_hours",
		now:   now.Truncate(24 * time.Hour).Add(3*time.Hour + 30*time.Minute), // today 03:30
		plant: func(g *gen) {
			night := now.Truncate(24 * time.Hour).Add(3*time.Hour + 5*time.Minute)
			for i := 0; i < 12; i++ {
				g.add("acme", night.Add(time.Duration(i)*time.Minute), audit.OpUnwrap, "reader", "alice", "render", 3, audit.ResultOK, "")
			}
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "acme", now.Truncate(24*time.Hour).Add(3*time.Hour))
			if f.Field("hour_utc") != "3" || f.Field("unwraps") != "12" || f.Field("baseline_hour_calls") != "0" {
				t.Errorf("finding = %s, want hour 3, 12 unwraps, no baseline calls at that hour", f.Detail)
			}
		},
	},
	{
		query: "revoked_scope_attempts",
		plant: func(g *gen) {
			for i := 0; i < 4; i++ {
				g.scopes = []*byokv1.AuditScope{{ChatId: "globex-chat-7", Day: "2026-03-01"}, {ChatId: "globex-chat-9", Day: "2026-03-02"}}
				g.add("globex", now.Add(-30*time.Minute+time.Duration(i)*time.Minute), audit.OpUnwrap, "reader", "mallory", "render", 2, audit.ResultDenied, "scope_revoked")
			}
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "globex", now.Add(-30*time.Minute))
			if f.Field("actor_user") != "mallory" || f.Field("attempts") != "4" || f.Field("chats") != "globex-chat-7,globex-chat-9" || f.Field("days") != "2026-03-01,2026-03-02" {
				t.Errorf("finding = %s, want mallory, 4 attempts on globex-chat-7,9 days 03-01,02", f.Detail)
			}
		},
	},
	{
		query: "unusual_batches",
		plant: func(g *gen) {
			g.add("initech", now.Add(-5*time.Minute), audit.OpUnwrap, "reader", "carol", "render", 400, audit.ResultOK, "")
		},
		check: func(t *testing.T, fs []anomaly.Finding) {
			f := one(t, fs, "initech", now.Add(-5*time.Minute))
			if f.Field("actor_user") != "carol" || f.Field("operation") != "unwrap" || f.Field("max_dek_count") != "400" {
				t.Errorf("finding = %s, want carol unwrap 400 DEKs", f.Detail)
			}
		},
	},
}

// num is the numeric value of column name.
func num(t *testing.T, f anomaly.Finding, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(f.Field(name), 64)
	if err != nil {
		t.Fatalf("column %s = %q, want a number (%s)", name, f.Field(name), f.Detail)
	}
	return v
}

// one asserts fs is exactly one finding, for tenant at at.
func one(t *testing.T, fs []anomaly.Finding, tenant string, at time.Time) anomaly.Finding {
	t.Helper()
	if len(fs) != 1 {
		t.Fatalf("findings = %+v, want exactly one (%s at %v)", fs, tenant, at)
	}
	if fs[0].TenantID != tenant || !fs[0].At.Equal(at) {
		t.Fatalf("finding = %s at %v (%s), want %s at %v", fs[0].TenantID, fs[0].At, fs[0].Detail, tenant, at)
	}
	return fs[0]
}

func TestQueriesFindPlantedAnomalies(t *testing.T) {
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			s := fixture(t, c.plant)
			p := anomaly.Defaults(now)
			if !c.now.IsZero() {
				p.Now = c.now
			}
			fs, err := anomaly.Run(context.Background(), s.Conn(), c.query, p)
			if err != nil {
				t.Fatalf("Run(%s) err = %v", c.query, err)
			}
			for _, f := range fs {
				t.Logf("%s %s %v %s", f.Query, f.TenantID, f.At, f.Detail)
			}
			c.check(t, fs)

			// The same traffic, one tenant at a time: only the planted tenant's finding.
			p.TenantID = "initech"
			if c.query == "unwrap_spikes" || c.query == "off_hours" {
				p.TenantID = "globex"
			}
			fs, err = anomaly.Run(context.Background(), s.Conn(), c.query, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				if f.TenantID != p.TenantID {
					t.Errorf("Run(tenant %s) returned a finding of %s", p.TenantID, f.TenantID)
				}
			}
		})
	}
}

func TestQueriesQuietOnCleanTraffic(t *testing.T) {
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			s := fixture(t, nil)
			times := []time.Time{now}
			if !c.now.IsZero() {
				times = append(times, c.now)
			}
			for _, at := range times {
				p := anomaly.Defaults(at)
				fs, err := anomaly.Run(context.Background(), s.Conn(), c.query, p)
				if err != nil {
					t.Fatalf("Run(%s) err = %v", c.query, err)
				}
				if len(fs) != 0 {
					t.Errorf("Run(%s, now %v) on clean traffic = %d findings, first %s at %v: %s", c.query, at, len(fs), fs[0].TenantID, fs[0].At, fs[0].Detail)
				}
			}
		})
	}
}

func TestRunAllEveryQuery(t *testing.T) {
	s := fixture(t, func(g *gen) {
		for _, c := range cases {
			if c.now.IsZero() {
				c.plant(g)
			}
		}
	})
	all, err := anomaly.RunAll(context.Background(), s.Conn(), anomaly.Defaults(now))
	if err != nil {
		t.Fatal(err)
	}
	qs, _ := anomaly.Queries()
	if len(all) != len(qs) || len(qs) != 7 {
		t.Fatalf("RunAll() = %d results, queries %d; want 7", len(all), len(qs))
	}
	for _, c := range cases {
		if c.now.IsZero() && len(all[c.query]) == 0 {
			t.Errorf("RunAll()[%s] found nothing", c.query)
		}
	}
	if len(all["off_hours"]) != 0 {
		t.Errorf("off_hours at 14:30 = %v, want none", all["off_hours"])
	}
	if _, err := anomaly.Run(context.Background(), s.Conn(), "nope", anomaly.Defaults(now)); err == nil {
		t.Error(`Run("nope") err = nil`)
	}
	if _, err := anomaly.RunAll(context.Background(), s.Conn(), anomaly.Params{}); err == nil {
		t.Error("RunAll(zero Params) err = nil, want an error (no Now)")
	}
}

func TestQueriesMatchSchemas(t *testing.T) {
	// schemas/clickhouse/queries is the source; queries/ holds the copies that are embedded.
	src, err := filepath.Glob("../../schemas/clickhouse/queries/*.sql")
	if err != nil || len(src) == 0 {
		t.Fatalf("no schemas/clickhouse/queries/*.sql found (err %v)", err)
	}
	qs, err := anomaly.Queries()
	if err != nil {
		t.Fatal(err)
	}
	embedded := map[string]bool{}
	for _, q := range qs {
		embedded[q.File] = true
	}
	for _, p := range src {
		name := filepath.Base(p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join("queries", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("pkg/anomaly/queries/%s differs from schemas/clickhouse/queries/%s; run: cp schemas/clickhouse/queries/*.sql pkg/anomaly/queries/", name, name)
		}
		delete(embedded, name)
	}
	for name := range embedded {
		t.Errorf("pkg/anomaly/queries/%s has no source in schemas/clickhouse/queries/", name)
	}
}

// TestQueryFilesFollowTheConvention checks every file's header documents each placeholder the
// statement uses, and gives a runnable example that replaces every one of them.
func TestQueryFilesFollowTheConvention(t *testing.T) {
	qs, err := anomaly.Queries()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Title == "" || !strings.Contains(q.Header, "Finds:") || !strings.Contains(q.Header, "Result:") || !strings.Contains(q.Header, "Run by hand") {
			t.Errorf("%s: header needs a title line, Finds:, Result: and Run by hand", q.File)
		}
		for _, w := range strings.FieldsFunc(q.SQL, func(r rune) bool { return r != '@' && r != '_' && !('a' <= r && r <= 'z') && !('0' <= r && r <= '9') }) {
			if !strings.HasPrefix(w, "@") {
				continue
			}
			if !strings.Contains(q.Header, w+" ") {
				t.Errorf("%s: placeholder %s is not documented in the header", q.File, w)
			}
			if !strings.Contains(q.Header, `"s/`+w+`/`) {
				t.Errorf("%s: the Run by hand example does not replace %s", q.File, w)
			}
		}
		if strings.Contains(q.SQL, "now()") {
			t.Errorf("%s: uses now(); take @now so results are reproducible", q.File)
		}
	}
}
