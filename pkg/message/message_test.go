package message

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

func valid() *byokv1.MessageEvent {
	return &byokv1.MessageEvent{
		SchemaVersion: 1, TenantId: "acme", ChatId: "general", MessageId: "m-1", SenderId: "u-1",
		CreatedAt: timestamppb.New(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)), ContentType: "text/plain",
		Body: []byte("canary-body-do-not-log"),
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(valid()); err != nil {
		t.Fatalf("Validate(valid) = %v", err)
	}
	tests := map[string]func(*byokv1.MessageEvent){
		"schema_version": func(e *byokv1.MessageEvent) { e.SchemaVersion = 2 },
		"tenant_id":      func(e *byokv1.MessageEvent) { e.TenantId = "" },
		"chat_id":        func(e *byokv1.MessageEvent) { e.ChatId = strings.Repeat("c", 300) },
		"message_id":     func(e *byokv1.MessageEvent) { e.MessageId = "a\nb" },
		"sender_id":      func(e *byokv1.MessageEvent) { e.SenderId = "" },
		"created_at":     func(e *byokv1.MessageEvent) { e.CreatedAt = nil },
		"body":           func(e *byokv1.MessageEvent) { e.Body = make([]byte, MaxBodyLen+1) },
	}
	for field, mutate := range tests {
		e := valid()
		mutate(e)
		err := Validate(e)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate(bad %s) = %v, want ErrInvalid naming the field", field, err)
		}
		if err != nil && strings.Contains(err.Error(), "canary") {
			t.Errorf("Validate error quotes the body: %v", err)
		}
	}
}

func TestUnmarshalRoundTripAndGarbage(t *testing.T) {
	b, err := Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	e, err := Unmarshal(b)
	if err != nil || !proto.Equal(e, valid()) {
		t.Fatalf("Unmarshal(Marshal(e)) = %v, %v", e, err)
	}
	if s := Scope(e); s.String() != "acme/general/2026-12-04" {
		t.Fatalf("Scope = %s", s)
	}
	for _, garbage := range [][]byte{[]byte("{\"json\":true}"), {0xff, 0xff, 0xff}, nil} {
		if _, err := Unmarshal(garbage); !errors.Is(err, ErrInvalid) {
			t.Errorf("Unmarshal(%q) err = %v, want ErrInvalid", garbage, err)
		}
	}
}
