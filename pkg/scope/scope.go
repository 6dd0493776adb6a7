// Package scope defines what one DEK covers: tenant × chat × UTC day.
//
// A scope is the unit of key reuse (one DEK per scope, cached for a bounded time) and of
// granular revocation (a chat, or a range of days). Its canonical encoding is what the KMS
// binds a wrapped DEK to (Vault context, Yandex aad_context), so a wrapped DEK of one scope
// never unwraps as another's.
package scope

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Limits on identifiers, checked everywhere a scope is built or parsed.
const (
	MaxTenantIDLen = 256
	MaxChatIDLen   = 256
)

// Day is a UTC calendar day, counted in days since 1970-01-01.
type Day uint32

// DayOf returns the UTC day that t falls on.
func DayOf(t time.Time) Day {
	return Day(t.UTC().Unix() / 86400)
}

// Time returns midnight UTC at the start of d.
func (d Day) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// String formats d as YYYY-MM-DD.
func (d Day) String() string { return d.Time().Format(time.DateOnly) }

// ParseDay parses YYYY-MM-DD.
func ParseDay(s string) (Day, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, fmt.Errorf("scope: day %q: want YYYY-MM-DD", s)
	}
	return DayOf(t), nil
}

// Scope is tenant × chat × UTC day.
type Scope struct {
	TenantID string
	ChatID   string
	Day      Day
}

// Validate reports whether the identifiers are non-empty and within limits.
func (s Scope) Validate() error {
	switch {
	case s.TenantID == "":
		return errors.New("scope: empty tenant id")
	case len(s.TenantID) > MaxTenantIDLen:
		return fmt.Errorf("scope: tenant id longer than %d bytes", MaxTenantIDLen)
	case s.ChatID == "":
		return errors.New("scope: empty chat id")
	case len(s.ChatID) > MaxChatIDLen:
		return fmt.Errorf("scope: chat id longer than %d bytes", MaxChatIDLen)
	}
	return nil
}

// String is a human-readable form for logs: ids are metadata, not secrets.
func (s Scope) String() string { return s.TenantID + "/" + s.ChatID + "/" + s.Day.String() }

// KMSContext is the canonical byte encoding a KMS binds a wrapped DEK to:
// "byok.scope.v1" ‖ u16 len ‖ tenant ‖ u16 len ‖ chat ‖ u32 day (big-endian).
// Length prefixes make it unambiguous ("a"+"bc" ≠ "ab"+"c").
func (s Scope) KMSContext() []byte {
	b := make([]byte, 0, 13+2+len(s.TenantID)+2+len(s.ChatID)+4)
	b = append(b, "byok.scope.v1"...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.TenantID)))
	b = append(b, s.TenantID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.ChatID)))
	b = append(b, s.ChatID...)
	return binary.BigEndian.AppendUint32(b, uint32(s.Day))
}

// ParseKMSContext is the inverse of KMSContext. It reports false for bytes that are not a
// well-formed scope context (KMS contexts are built by byok, so that means corruption or a
// foreign caller).
func ParseKMSContext(b []byte) (Scope, bool) {
	const prefix = "byok.scope.v1"
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix {
		return Scope{}, false
	}
	b = b[len(prefix):]
	next := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return "", false
		}
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, true
	}
	tenant, ok1 := next()
	chat, ok2 := next()
	if !ok1 || !ok2 || len(b) != 4 {
		return Scope{}, false
	}
	return Scope{TenantID: tenant, ChatID: chat, Day: Day(binary.BigEndian.Uint32(b))}, true
}
