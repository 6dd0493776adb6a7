package scope

import (
	"bytes"
	"testing"
	"time"
)

func TestDayOf(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), "2026-12-04"},
		{time.Date(2026, 12, 4, 23, 59, 59, 0, time.UTC), "2026-12-04"},
		// 01:30 in Moscow (UTC+3) is still the previous UTC day.
		{time.Date(2026, 12, 5, 1, 30, 0, 0, time.FixedZone("MSK", 3*3600)), "2026-12-04"},
	}
	for _, tt := range tests {
		if got := DayOf(tt.in).String(); got != tt.want {
			t.Errorf("DayOf(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
	d, err := ParseDay("2026-12-04")
	if err != nil || d.String() != "2026-12-04" {
		t.Fatalf("ParseDay round trip = %v, %v", d, err)
	}
	if _, err := ParseDay("04.12.2026"); err == nil {
		t.Fatal("ParseDay(04.12.2026) err = nil, want error")
	}
}

func TestKMSContextUnambiguous(t *testing.T) {
	a := Scope{TenantID: "a", ChatID: "bc", Day: 1}.KMSContext()
	b := Scope{TenantID: "ab", ChatID: "c", Day: 1}.KMSContext()
	c := Scope{TenantID: "a", ChatID: "bc", Day: 2}.KMSContext()
	if bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("distinct scopes share a KMS context")
	}
}

func TestValidate(t *testing.T) {
	long := string(make([]byte, MaxChatIDLen+1))
	for _, s := range []Scope{{ChatID: "c"}, {TenantID: "t"}, {TenantID: "t", ChatID: long}} {
		if err := s.Validate(); err == nil {
			t.Errorf("Validate(%q/%q) = nil, want error", s.TenantID, s.ChatID)
		}
	}
	if err := (Scope{TenantID: "t", ChatID: "c"}).Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}

func TestParseKMSContext(t *testing.T) {
	s := Scope{TenantID: "acme", ChatID: "general", Day: 20426}
	got, ok := ParseKMSContext(s.KMSContext())
	if !ok || got != s {
		t.Fatalf("ParseKMSContext(KMSContext(s)) = %v, %t", got, ok)
	}
	ctx := s.KMSContext()
	for n := 0; n < len(ctx); n++ {
		if _, ok := ParseKMSContext(ctx[:n]); ok {
			t.Fatalf("ParseKMSContext(first %d bytes) ok, want false", n)
		}
	}
	if _, ok := ParseKMSContext(append(ctx, 0)); ok {
		t.Fatal("ParseKMSContext(trailing byte) ok, want false")
	}
}
