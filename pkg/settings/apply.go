package settings

import (
	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/control"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/tenant"
)

// Apply keeps dir in step with the tenant settings view follows: every saved tenant's settings
// become its settings layer in dir now, and again on every change, so that a tenant switched on
// in the settings service is encrypted by every worker within moments, without a restart.
//
// A record this process cannot use (no settings key, a credential sealed with another key, a
// malformed record) fails closed: the tenant stays enabled with an unusable configuration, so
// its messages are held rather than written in clear, and the reason is logged (never the
// credential). key may be nil on a process given no settings key.
func Apply(view *control.View, dir *tenant.Directory, key *Key, log zerolog.Logger) {
	apply := func(ts *byokv1.TenantSettings) {
		c, err := ToConfig(ts, key)
		if err != nil {
			log.Error().Str("tenant_id", ts.TenantId).Err(err).Msg("saved settings unusable here; the tenant's messages are held")
			c = tenant.Config{Enabled: true, Provider: ts.Provider, KEKID: ts.KekId, Revision: ts.Revision} // no credential: fails closed
		}
		dir.SetTenant(ts.TenantId, c)
	}
	// Subscribe before reading the current state: a change in between is applied twice, never
	// missed (applying the same settings again changes nothing).
	view.Subscribe(func(c control.Change) {
		switch {
		case c.Settings != nil:
			apply(c.Settings)
		case c.SettingsRemoved:
			dir.RemoveTenant(c.TenantID)
		}
	})
	for _, id := range view.Tenants() {
		if ts, ok := view.Settings(id); ok {
			apply(ts)
		}
	}
}
