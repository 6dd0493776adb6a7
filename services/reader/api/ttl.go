package api

import (
	"time"

	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/deccache"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// FollowCacheTTL applies the DEK cache TTL each customer saved in their settings
// (dek_cache_ttl_seconds) to cache, now and on every change: the customer sets how long a DEK
// their KMS unwrapped may serve reads, within the operator's ceiling (-dek-ttl).
func FollowCacheTTL(view *control.View, cache *deccache.Cache) {
	apply := func(ts *byokv1.TenantSettings) {
		cache.SetTenantTTL(ts.TenantId, time.Duration(ts.DekCacheTtlSeconds)*time.Second)
	}
	// Subscribe first, then read the current state: a change in between is applied twice, never missed.
	view.Subscribe(func(c control.Change) {
		switch {
		case c.Settings != nil:
			apply(c.Settings)
		case c.SettingsRemoved:
			cache.SetTenantTTL(c.TenantID, 0)
		}
	})
	for _, id := range view.Tenants() {
		if ts, ok := view.Settings(id); ok {
			apply(ts)
		}
	}
}
