package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/services/ingest/api"
	"github.com/byok-io/byok/services/loadgen/gen"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c config)
		wantErr string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c config) {
				want := gen.DefaultConfig()
				if c.target != "http://127.0.0.1:8080" || c.gen != want {
					t.Errorf("parseConfig() = %+v, want target http://127.0.0.1:8080 and %+v", c, want)
				}
			},
		},
		{
			name: "env, then flags over env",
			args: []string{"-messages", "5", "-target", "kafka"},
			env: map[string]string{"BYOK_LOADGEN_MESSAGES": "7", "BYOK_LOADGEN_TENANTS": "2", "BYOK_LOADGEN_RATE": "50",
				"BYOK_KAFKA_BROKERS": "k1:9092,k2:9092", "BYOK_LOADGEN_TARGET": "http://x:1"},
			check: func(t *testing.T, c config) {
				if c.gen.Messages != 5 || c.gen.Tenants != 2 || c.gen.Rate != 50 || c.target != "kafka" ||
					!slices.Equal(c.brokers, []string{"k1:9092", "k2:9092"}) {
					t.Errorf("parseConfig() = %+v, want messages 5, tenants 2, rate 50, kafka at k1,k2", c)
				}
			},
		},
		{name: "env not a number", env: map[string]string{"BYOK_LOADGEN_CHATS": "many"}, wantErr: "-chats (BYOK_LOADGEN_CHATS)"},
		{name: "flag not a number", args: []string{"-batch", "x"}, wantErr: "batch"},
		{name: "zero messages", args: []string{"-messages", "0"}, wantErr: "-messages"},
		{name: "fewer chats than tenants", args: []string{"-tenants", "4", "-chats", "3"}, wantErr: "-chats"},
		{name: "negative rate", args: []string{"-rate", "-1"}, wantErr: "-rate"},
		{name: "bad target", args: []string{"-target", "127.0.0.1:8080"}, wantErr: "-target (BYOK_LOADGEN_TARGET)"},
		{name: "kafka without brokers", args: []string{"-target", "kafka", "-brokers", ""}, wantErr: "-brokers (BYOK_KAFKA_BROKERS)"},
		{name: "kafka broker without port", args: []string{"-target", "kafka", "-brokers", "k1"}, wantErr: "-brokers (BYOK_KAFKA_BROKERS)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig() err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig() err = %v, want nil", err)
			}
			tt.check(t, c)
		})
	}
}

type publisherFunc func(context.Context, ...*byokv1.MessageEvent) error

func (f publisherFunc) Publish(ctx context.Context, e ...*byokv1.MessageEvent) error {
	return f(ctx, e...)
}

func TestRunFailsWhenAnyMessageFailed(t *testing.T) {
	var calls atomic.Int64
	pub := publisherFunc(func(context.Context, ...*byokv1.MessageEvent) error {
		if calls.Add(1) == 2 {
			return errors.New("kafka down")
		}
		return nil
	})
	srv := httptest.NewServer(api.NewHandler(pub, zerolog.Nop()))
	defer srv.Close()
	cfg := config{target: srv.URL, gen: gen.Config{Messages: 30, Tenants: 1, Chats: 1, BodySize: 5, Concurrency: 1, Batch: 10}}
	var progress bytes.Buffer
	err := run(context.Background(), cfg, &progress)
	if err == nil || !strings.Contains(err.Error(), "10 of 30 messages failed") {
		t.Errorf("run() err = %v, want 10 of 30 messages failed", err)
	}
	if !strings.Contains(progress.String(), "done: sent=20 errors=10") {
		t.Errorf("progress = %q, want the summary line", progress.String())
	}

	calls.Store(100) // no more failures
	if err := run(context.Background(), cfg, io.Discard); err != nil {
		t.Errorf("run() err = %v, want nil", err)
	}
}
