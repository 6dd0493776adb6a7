package api

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/control"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// syncedView is a control.View whose freshness the test controls.
type syncedView struct {
	*control.View
	stale atomic.Bool
}

func (v *syncedView) SyncedWithin(time.Duration) bool { return !v.stale.Load() }

func (v *syncedView) revoke(t *testing.T, r *byokv1.Revocation) {
	t.Helper()
	r.SchemaVersion, r.TenantId, r.CreatedAt = control.SchemaVersion, "acme", timestamppb.Now()
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	v.ApplyRevocation(control.RevocationKey(r.TenantId, r.RevocationId), b)
}

func withRevocations(t *testing.T, f *fixture) *syncedView {
	v := &syncedView{View: control.NewView(zerolog.Nop())}
	f.reader.Revocations = v
	// What the service does: a revocation drops the cached DEKs it covers at once.
	v.Subscribe(func(c control.Change) {
		if c.Revoked != nil {
			rule, _ := control.Compile(c.Revoked)
			f.cache.DropScopes(c.TenantID, rule.Matches)
		}
	})
	return v
}

// TestGranularRevocation: a revoked chat is refused at once even though its DEK is cached (and the
// cached DEK is zeroed), the refusal is audited as scope_revoked without a KMS call, other chats
// still open, and un-revoking restores access.
func TestGranularRevocation(t *testing.T) {
	f := newFixture(t, time.Minute)
	v := withRevocations(t, f)
	items := f.sealed["acme"] // chats chat-0, chat-1, chat-2, twice each
	f.checkOK(t, f.decrypt(t, items))
	cached := f.cache.Stats().Entries

	v.revoke(t, &byokv1.Revocation{RevocationId: "r1", ChatId: "chat-1"})
	if got := f.cache.Stats().Entries; got != cached-1 {
		t.Fatalf("cache entries after revoking chat-1 = %d, want %d (its DEK dropped)", got, cached-1)
	}
	unwraps := f.kms["acme"].unwraps.Load()
	resp := f.decrypt(t, items)
	for i, r := range resp.Results {
		if i%3 == 1 {
			if r.Error != ReasonScopeRevoked || r.BodyBase64 != "" {
				t.Fatalf("revoked chat-1 item = %+v, want error %q", r, ReasonScopeRevoked)
			}
			continue
		}
		f.checkOK(t, DecryptResponse{Results: []DecryptResult{r}})
	}
	if n := f.kms["acme"].unwraps.Load(); n != unwraps {
		t.Fatalf("KMS called %d times for a read with a revoked scope, want 0", n-unwraps)
	}
	denied := f.sink.byOp()["unwrap/denied"]
	if len(denied) != 1 || denied[0].ErrorCode != audit.CodeScopeRevoked || denied[0].ActorService != "render-svc" ||
		denied[0].Purpose != "render" || len(denied[0].Scopes) != 1 || denied[0].Scopes[0].ChatId != "chat-1" {
		t.Fatalf("audit of the refused read = %v, want one denied scope_revoked event for chat-1 by render-svc", denied)
	}
	if f.reader.Stats().ScopeRevoked != 2 {
		t.Fatalf("ScopeRevoked = %d, want 2", f.reader.Stats().ScopeRevoked)
	}

	// A date range covering the scopes' day revokes every chat.
	v.revoke(t, &byokv1.Revocation{RevocationId: "r2", FromDay: "2025-12-04", ToDay: "2025-12-04"})
	for _, r := range f.decrypt(t, items).Results {
		if r.Error != ReasonScopeRevoked {
			t.Fatalf("item in a revoked date range = %+v, want %q", r, ReasonScopeRevoked)
		}
	}

	// Un-revoke both: everything opens again (through the KMS: the DEKs were dropped).
	v.ApplyRevocation(control.RevocationKey("acme", "r1"), nil)
	v.ApplyRevocation(control.RevocationKey("acme", "r2"), nil)
	f.checkOK(t, f.decrypt(t, items))
}

// TestStaleRevocationsFailClosed: a reader whose revocation list is not confirmed current serves
// nothing, not even from its cache.
func TestStaleRevocationsFailClosed(t *testing.T) {
	f := newFixture(t, time.Minute)
	v := withRevocations(t, f)
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
	v.stale.Store(true)
	for _, r := range f.decrypt(t, f.sealed["acme"]).Results {
		if r.Error != ReasonRevocationsStale || r.BodyBase64 != "" {
			t.Fatalf("read with a stale revocation list = %+v, want %q", r, ReasonRevocationsStale)
		}
	}
	denied := f.sink.byOp()["unwrap/denied"]
	if len(denied) != 1 || denied[0].ErrorCode != audit.CodeRevocationsStale || denied[0].DekCount != 3 {
		t.Fatalf("audit of the refused read = %v, want one denied revocations_stale event for its 3 scopes", denied)
	}
	v.stale.Store(false)
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
}
