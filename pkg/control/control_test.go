package control

import (
	"errors"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/scope"
)

func day(t *testing.T, s string) scope.Day {
	t.Helper()
	d, err := scope.ParseDay(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func rev(id, chat, from, to string) *byokv1.Revocation {
	return &byokv1.Revocation{SchemaVersion: SchemaVersion, RevocationId: id, TenantId: "acme", ChatId: chat,
		FromDay: from, ToDay: to, CreatedAt: timestamppb.Now()}
}

func TestRuleMatches(t *testing.T) {
	sc := func(tenant, chat, d string) scope.Scope {
		return scope.Scope{TenantID: tenant, ChatID: chat, Day: day(t, d)}
	}
	for _, tc := range []struct {
		name string
		r    *byokv1.Revocation
		s    scope.Scope
		want bool
	}{
		{"chat: same chat", rev("r", "c1", "", ""), sc("acme", "c1", "2026-03-01"), true},
		{"chat: other chat", rev("r", "c1", "", ""), sc("acme", "c2", "2026-03-01"), false},
		{"chat: other tenant", rev("r", "c1", "", ""), sc("globex", "c1", "2026-03-01"), false},
		{"range: first day", rev("r", "", "2026-03-01", "2026-03-31"), sc("acme", "any", "2026-03-01"), true},
		{"range: last day", rev("r", "", "2026-03-01", "2026-03-31"), sc("acme", "any", "2026-03-31"), true},
		{"range: day before", rev("r", "", "2026-03-01", "2026-03-31"), sc("acme", "any", "2026-02-28"), false},
		{"range: day after", rev("r", "", "2026-03-01", "2026-03-31"), sc("acme", "any", "2026-04-01"), false},
		{"open start", rev("r", "", "", "2026-03-31"), sc("acme", "any", "2001-01-01"), true},
		{"open end", rev("r", "", "2026-03-01", ""), sc("acme", "any", "2099-01-01"), true},
		{"chat and range: in", rev("r", "c1", "2026-03-01", "2026-03-01"), sc("acme", "c1", "2026-03-01"), true},
		{"chat and range: other chat", rev("r", "c1", "2026-03-01", "2026-03-01"), sc("acme", "c2", "2026-03-01"), false},
		{"chat and range: other day", rev("r", "c1", "2026-03-01", "2026-03-01"), sc("acme", "c1", "2026-03-02"), false},
		{"whole tenant", rev("r", "", "", ""), sc("acme", "c9", "2026-03-02"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, err := Compile(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if got := rule.Matches(tc.s); got != tc.want {
				t.Fatalf("Matches(%s) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *byokv1.Revocation
	}{
		{"nil", nil},
		{"future schema", &byokv1.Revocation{SchemaVersion: 2, RevocationId: "r", TenantId: "acme"}},
		{"no tenant", &byokv1.Revocation{SchemaVersion: 1, RevocationId: "r"}},
		{"no id", &byokv1.Revocation{SchemaVersion: 1, TenantId: "acme"}},
		{"slash in id", &byokv1.Revocation{SchemaVersion: 1, TenantId: "acme", RevocationId: "a/b"}},
		{"bad from", rev("r", "", "2026-3-1", "")},
		{"bad to", rev("r", "", "", "yesterday")},
		{"to before from", rev("r", "", "2026-03-02", "2026-03-01")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Compile(tc.r); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile() err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestViewAppliesAndTombstones(t *testing.T) {
	v := NewView(zerolog.Nop())
	var changes []Change
	v.Subscribe(func(c Change) { changes = append(changes, c) })
	r1 := rev("r1", "c1", "", "")
	b, _ := proto.Marshal(r1)
	v.ApplyRevocation(RevocationKey("acme", "r1"), b)
	s := scope.Scope{TenantID: "acme", ChatID: "c1", Day: day(t, "2026-03-01")}
	if got, ok := v.Revoked(s); !ok || got.RevocationId != "r1" {
		t.Fatalf("Revoked() = %v, %v after revoke", got, ok)
	}
	if other := (scope.Scope{TenantID: "acme", ChatID: "c2", Day: s.Day}); func() bool { _, ok := v.Revoked(other); return ok }() {
		t.Fatal("another chat is revoked")
	}
	v.ApplyRevocation(RevocationKey("acme", "r1"), nil)
	if _, ok := v.Revoked(s); ok || v.HasRevocations("acme") {
		t.Fatal("still revoked after the tombstone")
	}
	v.ApplyRevocation(RevocationKey("acme", "r1"), nil) // a repeated tombstone is a no-op
	if len(changes) != 2 || changes[0].Revoked == nil || changes[1].Unrevoked == nil {
		t.Fatalf("changes = %+v, want one revoke and one un-revoke", changes)
	}

	// Defensive parsing: garbage, a future schema, a key that names another tenant.
	future := rev("r2", "", "", "")
	future.SchemaVersion = 9
	fb, _ := proto.Marshal(future)
	v.ApplyRevocation(RevocationKey("acme", "r2"), fb)
	v.ApplyRevocation(RevocationKey("acme", "r3"), []byte{0xff, 0xff, 0xff})
	v.ApplyRevocation(RevocationKey("globex", "r1"), b)
	if v.Skipped() != 3 || v.HasRevocations("acme") || v.HasRevocations("globex") {
		t.Fatalf("skipped = %d, want 3 and nothing applied", v.Skipped())
	}

	ts := &byokv1.TenantSettings{SchemaVersion: 1, TenantId: "acme", Enabled: true, Provider: "vault", KekId: "k", SealedCredential: []byte{1}}
	tb, _ := proto.Marshal(ts)
	v.ApplySettings("acme", tb)
	v.ApplySettings("globex", tb) // key does not match
	if got, ok := v.Settings("acme"); !ok || got.KekId != "k" {
		t.Fatalf("Settings(acme) = %v, %v", got, ok)
	}
	if _, ok := v.Settings("globex"); ok || v.Skipped() != 4 {
		t.Fatal("a settings record under another tenant's key was applied")
	}
	v.ApplySettings("acme", nil)
	if _, ok := v.Settings("acme"); ok {
		t.Fatal("settings survive their tombstone")
	}
}
