package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/ingest/api"
)

func TestParseConfigMetricsListen(t *testing.T) {
	tests := []struct {
		args    []string
		env     string
		want    string
		wantErr bool
	}{
		{want: metricsOnAPI},
		{env: "0.0.0.0:9100", want: "0.0.0.0:9100"},
		{env: "off", want: ""},
		{args: []string{"-metrics-listen", ""}, want: ""},
		{args: []string{"-metrics-listen", "9100"}, wantErr: true},
	}
	for _, tt := range tests {
		getenv := func(k string) string {
			if k == "BYOK_METRICS_LISTEN" {
				return tt.env
			}
			return ""
		}
		got, err := parseConfig(tt.args, getenv, io.Discard)
		if (err != nil) != tt.wantErr || (err == nil && got.metricsListen != tt.want) {
			t.Errorf("parseConfig(%v, env %q) = %q, %v; want %q, error %t", tt.args, tt.env, got.metricsListen, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "-metrics-listen (BYOK_METRICS_LISTEN)") {
			t.Errorf("parseConfig error %q does not name the setting", err)
		}
	}
}

type stubPublisher struct{ err error }

func (s stubPublisher) Publish(context.Context, ...*byokv1.MessageEvent) error { return s.err }

// TestMetricsOnAPIListener checks the default wiring: /metrics and /readyz next to the API, the
// API's own /healthz untouched, and published messages counted by result.
func TestMetricsOnAPIListener(t *testing.T) {
	reg := metrics.NewRegistry("ingest")
	pub := &stubPublisher{}
	h := withMetrics(api.NewHandler(newCountingPublisher(pub, reg), zerolog.Nop()),
		metrics.Handler(reg, metrics.Health{Ready: []metrics.Check{{Name: "kafka", Fn: func(context.Context) error { return errors.New("down") }}}}))
	post := func(body string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	const canary = "CANARY-ingest-body-77"
	if code := post(`{"tenant_id":"acme","chat_id":"c","sender_id":"u","body":"` + canary + `"}`); code != http.StatusAccepted {
		t.Fatalf("POST /v1/messages = %d, want 202", code)
	}
	pub.err = errors.New("kafka down")
	post(`{"tenant_id":"acme","chat_id":"c","sender_id":"u","body":"` + canary + `"}`)

	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" && body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want the API's 200 ok", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "kafka") {
		t.Errorf("GET /readyz = %d %q, want 503 naming kafka", code, body)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	for _, want := range []string{`byok_ingest_messages_total{result="ok",service="ingest"} 1`, `byok_ingest_messages_total{result="error",service="ingest"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	for _, leak := range []string{canary, "acme"} {
		if strings.Contains(body, leak) {
			t.Errorf("GET /metrics contains %q", leak)
		}
	}
}
