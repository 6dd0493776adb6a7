package api

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/deccache"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// TestFollowCacheTTL: the TTL a customer saves reaches the reader's cache, saved before or after
// the reader started, and deleting the settings restores the operator's TTL.
func TestFollowCacheTTL(t *testing.T) {
	cache, err := deccache.New(deccache.Config{MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	record := func(tenant string, ttl uint32) []byte {
		b, _ := proto.Marshal(&byokv1.TenantSettings{SchemaVersion: 1, TenantId: tenant, DekCacheTtlSeconds: ttl})
		return b
	}
	view := control.NewView(zerolog.Nop())
	view.ApplySettings("early", record("early", 5))
	FollowCacheTTL(view, cache)
	if got := cache.TTL("early"); got != 5*time.Second {
		t.Fatalf("TTL(early) = %s, want 5s saved before the reader followed", got)
	}
	view.ApplySettings("acme", record("acme", 20))
	if got := cache.TTL("acme"); got != 20*time.Second {
		t.Fatalf("TTL(acme) = %s, want 20s", got)
	}
	view.ApplySettings("acme", record("acme", 0))
	if got := cache.TTL("acme"); got != time.Minute {
		t.Fatalf("TTL(acme) = %s, want the default 1m when the saved TTL is 0", got)
	}
	view.ApplySettings("early", nil)
	if got := cache.TTL("early"); got != time.Minute {
		t.Fatalf("TTL(early) after its settings were deleted = %s, want 1m", got)
	}
}
