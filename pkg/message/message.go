// Package message validates and (de)serialises the plaintext MessageEvent that producers publish,
// with the limits every byok component enforces the same way. Errors name the field at fault and
// never quote the body.
package message

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/scope"
)

// SchemaVersion is the MessageEvent layout this build writes and accepts.
const SchemaVersion = 1

// Limits.
const (
	MaxIDLen          = 256
	MaxContentTypeLen = 128
	MaxBodyLen        = envelope.MaxBodyLen
	// MaxEventLen bounds a serialised event (body plus metadata).
	MaxEventLen = MaxBodyLen + 4096
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid message event")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

func checkID(field, v string, max int) error {
	switch {
	case v == "":
		return invalid("%s is required", field)
	case len(v) > max:
		return invalid("%s is longer than %d bytes", field, max)
	case !utf8.ValidString(v):
		return invalid("%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalid("%s contains a control character", field)
		}
	}
	return nil
}

// Validate checks a MessageEvent's required fields and limits.
func Validate(e *byokv1.MessageEvent) error {
	if e == nil {
		return invalid("event is empty")
	}
	if e.SchemaVersion != SchemaVersion {
		return invalid("schema_version %d is not supported (want %d)", e.SchemaVersion, SchemaVersion)
	}
	if err := checkID("tenant_id", e.TenantId, scope.MaxTenantIDLen); err != nil {
		return err
	}
	if err := checkID("chat_id", e.ChatId, scope.MaxChatIDLen); err != nil {
		return err
	}
	if err := checkID("message_id", e.MessageId, envelope.MaxMessageIDLen); err != nil {
		return err
	}
	if err := checkID("sender_id", e.SenderId, MaxIDLen); err != nil {
		return err
	}
	if e.CreatedAt == nil {
		return invalid("created_at is required")
	}
	if err := e.CreatedAt.CheckValid(); err != nil {
		return invalid("created_at is not a valid timestamp")
	}
	if t := e.CreatedAt.AsTime(); t.Year() < 2000 || t.Year() > 9999 {
		return invalid("created_at year %d is out of range", t.Year())
	}
	if len(e.ContentType) > MaxContentTypeLen {
		return invalid("content_type is longer than %d bytes", MaxContentTypeLen)
	}
	if len(e.Body) > MaxBodyLen {
		return invalid("body of %d bytes exceeds %d", len(e.Body), MaxBodyLen)
	}
	return nil
}

// Scope returns the DEK scope of a valid event: its tenant, chat, and created_at's UTC day.
func Scope(e *byokv1.MessageEvent) scope.Scope {
	return scope.Scope{TenantID: e.TenantId, ChatID: e.ChatId, Day: scope.DayOf(e.CreatedAt.AsTime())}
}

// Marshal validates and serialises e.
func Marshal(e *byokv1.MessageEvent) ([]byte, error) {
	if err := Validate(e); err != nil {
		return nil, err
	}
	return proto.Marshal(e)
}

// Unmarshal parses and validates a serialised MessageEvent.
func Unmarshal(b []byte) (*byokv1.MessageEvent, error) {
	if len(b) > MaxEventLen {
		return nil, invalid("event of %d bytes exceeds %d", len(b), MaxEventLen)
	}
	var e byokv1.MessageEvent
	if err := proto.Unmarshal(b, &e); err != nil {
		return nil, invalid("not a protobuf MessageEvent")
	}
	if err := Validate(&e); err != nil {
		return nil, err
	}
	return &e, nil
}
