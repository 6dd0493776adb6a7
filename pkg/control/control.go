// Package control carries the customer's decisions — tenant settings and granular revocations —
// from the settings service to every byok worker within seconds, over two compacted Kafka topics
// (see schemas/proto/byok/v1/control.proto).
//
// Every worker follows both topics from their beginning with a View: it returns once it has
// caught up, so a worker never serves a read before it knows every revocation, and it then
// applies new records as they arrive (typically within tens of milliseconds) and tells
// subscribers, which drop cached DEKs of revoked scopes and reopen changed tenants' KMS clients.
// The settings service writes with a Store: a Publisher plus a View, so that its writes are
// visible to its own reads once they return.
//
// Records are parsed defensively: an unknown schema_version, a missing id or an invalid day range
// is logged and skipped, never half-applied; a tombstone (null value) removes the record of its
// key.
package control

import (
	"errors"
	"fmt"
	"strings"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/scope"
)

// Default topic names.
const (
	TopicSettings    = "byok.settings"
	TopicRevocations = "byok.revocations"
)

// SchemaVersion is the schema_version of the records this package writes and reads.
const SchemaVersion = 1

// Topics names the two control topics.
type Topics struct {
	Settings, Revocations string
}

// DefaultTopics returns the default topic names.
func DefaultTopics() Topics {
	return Topics{Settings: TopicSettings, Revocations: TopicRevocations}
}

// ErrInvalid marks a record that fails validation.
var ErrInvalid = errors.New("control: invalid record")

// SettingsKey is the Kafka key of a tenant's settings record.
func SettingsKey(tenantID string) string { return tenantID }

// RevocationKey is the Kafka key of a revocation record: tenant id and revocation id.
func RevocationKey(tenantID, revocationID string) string { return tenantID + "/" + revocationID }

// ValidateSettings checks a settings record before it is written or applied.
func ValidateSettings(ts *byokv1.TenantSettings) error {
	switch {
	case ts == nil:
		return fmt.Errorf("%w: empty settings", ErrInvalid)
	case ts.SchemaVersion != SchemaVersion:
		return fmt.Errorf("%w: settings schema_version %d (this build reads %d)", ErrInvalid, ts.SchemaVersion, SchemaVersion)
	case ts.TenantId == "":
		return fmt.Errorf("%w: settings without tenant_id", ErrInvalid)
	case ts.Enabled && (ts.Provider == "" || ts.KekId == "" || len(ts.SealedCredential) == 0):
		return fmt.Errorf("%w: tenant %s: enabled settings need provider, kek_id and a credential", ErrInvalid, ts.TenantId)
	}
	return nil
}

// Rule is a validated revocation, ready to match scopes.
type Rule struct {
	Revocation *byokv1.Revocation
	from, to   scope.Day
	hasFrom    bool
	hasTo      bool
}

// Compile validates r and returns its Rule.
func Compile(r *byokv1.Revocation) (Rule, error) {
	if r == nil {
		return Rule{}, fmt.Errorf("%w: empty revocation", ErrInvalid)
	}
	if r.SchemaVersion != SchemaVersion {
		return Rule{}, fmt.Errorf("%w: revocation schema_version %d (this build reads %d)", ErrInvalid, r.SchemaVersion, SchemaVersion)
	}
	if r.TenantId == "" || r.RevocationId == "" {
		return Rule{}, fmt.Errorf("%w: revocation needs tenant_id and revocation_id", ErrInvalid)
	}
	if strings.Contains(r.RevocationId, "/") {
		return Rule{}, fmt.Errorf("%w: revocation_id %q contains '/'", ErrInvalid, r.RevocationId)
	}
	rule := Rule{Revocation: r}
	var err error
	if r.FromDay != "" {
		if rule.from, err = scope.ParseDay(r.FromDay); err != nil {
			return Rule{}, fmt.Errorf("%w: from_day %q is not YYYY-MM-DD", ErrInvalid, r.FromDay)
		}
		rule.hasFrom = true
	}
	if r.ToDay != "" {
		if rule.to, err = scope.ParseDay(r.ToDay); err != nil {
			return Rule{}, fmt.Errorf("%w: to_day %q is not YYYY-MM-DD", ErrInvalid, r.ToDay)
		}
		rule.hasTo = true
	}
	if rule.hasFrom && rule.hasTo && rule.to < rule.from {
		return Rule{}, fmt.Errorf("%w: to_day %s is before from_day %s", ErrInvalid, r.ToDay, r.FromDay)
	}
	return rule, nil
}

// Matches reports whether s falls under the revocation.
func (r Rule) Matches(s scope.Scope) bool {
	rv := r.Revocation
	if s.TenantID != rv.TenantId {
		return false
	}
	if rv.ChatId != "" && s.ChatID != rv.ChatId {
		return false
	}
	if r.hasFrom && s.Day < r.from {
		return false
	}
	if r.hasTo && s.Day > r.to {
		return false
	}
	return true
}

// Describe is a short human form of what a revocation covers, e.g. "chat c-1,
// 2026-01-01..2026-01-31", "every chat, from 2026-03-01", "chat c-2, every day".
func Describe(r *byokv1.Revocation) string {
	what := "every chat"
	if r.ChatId != "" {
		what = "chat " + r.ChatId
	}
	switch {
	case r.FromDay == "" && r.ToDay == "":
		return what + ", every day"
	case r.ToDay == "":
		return what + ", from " + r.FromDay
	case r.FromDay == "":
		return what + ", until " + r.ToDay
	}
	return what + ", " + r.FromDay + ".." + r.ToDay
}
