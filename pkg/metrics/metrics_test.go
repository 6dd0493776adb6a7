package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func ok(context.Context) error   { return nil }
func fail(context.Context) error { return errors.New("secret-password@db:9000 refused") }

func TestReadyz(t *testing.T) {
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	tests := []struct {
		name     string
		checks   []metrics.Check
		wantCode int
		wantBody string
	}{
		{"no checks", nil, 200, "ready\n"},
		{"all pass", []metrics.Check{{"kafka", ok}, {"clickhouse", ok}}, 200, "ready\n"},
		{"one fails", []metrics.Check{{"kafka", ok}, {"clickhouse", fail}}, 503, "not ready: clickhouse\n"},
		{"failing names sorted", []metrics.Check{{"tenants", fail}, {"kafka", fail}, {"kms", ok}}, 503, "not ready: kafka, tenants\n"},
		{"a hanging check times out and fails", []metrics.Check{{"kafka", hang}, {"tenants", ok}}, 503, "not ready: kafka\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := metrics.Handler(metrics.NewRegistry("test"), metrics.Health{Ready: tt.checks, Timeout: 50 * time.Millisecond})
			code, body := get(t, h, "/readyz")
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if strings.Contains(body, "secret-password") {
				t.Errorf("GET /readyz body %q carries a check's error text; only names may be shown", body)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	var dead error
	h := metrics.Handler(metrics.NewRegistry("test"), metrics.Health{
		Live:  func() error { return dead },
		Ready: []metrics.Check{{"kafka", fail}}, // readiness must not affect liveness
	})
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	dead = errors.New("loop stuck")
	if code, body := get(t, h, "/healthz"); code != 503 || strings.Contains(body, "stuck") {
		t.Errorf("GET /healthz with a dead loop = %d %q, want 503 without the error text", code, body)
	}
	if code, _ := get(t, metrics.Handler(metrics.NewRegistry("test"), metrics.Health{}), "/healthz"); code != 200 {
		t.Errorf("GET /healthz without Live = %d, want 200", code)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	reg := metrics.NewRegistry("encryptor")
	var n int64
	reg.Counter("things_total", "Things.", func() int64 { return n })
	reg.Gauge("things_now", "Things now.", func() float64 { return 2.5 })
	k := metrics.NewKMS(reg)
	k.Observe("local", "wrap", "ok", 7, 3*time.Millisecond)
	n = 42
	code, body := get(t, metrics.Handler(reg, metrics.Health{}), "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	for _, want := range []string{
		`byok_things_total{service="encryptor"} 42`,
		`byok_things_now{service="encryptor"} 2.5`,
		`byok_kms_calls_total{operation="wrap",provider="local",result="ok",service="encryptor"} 1`,
		`byok_kms_call_deks_sum{operation="wrap",provider="local",service="encryptor"} 7`,
		`byok_kms_call_duration_seconds_count{operation="wrap",provider="local",service="encryptor"} 1`,
		`go_goroutines{service="encryptor"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", metrics.NewRegistry("test"), metrics.Health{Ready: []metrics.Check{{"kafka", fail}}})
	if err != nil {
		t.Fatalf("Serve() err = %v, want nil", err)
	}
	resp, err := http.Get("http://" + addr.String() + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz err = %v, want nil", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != "not ready: kafka\n" {
		t.Errorf("GET /readyz = %d %q, want 503 \"not ready: kafka\\n\"", resp.StatusCode, body)
	}
	if _, err := metrics.Serve(ctx, addr.String(), metrics.NewRegistry("test"), metrics.Health{}); err == nil {
		t.Errorf("Serve() on a taken address err = nil, want the listen error")
	}
	cancel()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := http.Get("http://" + addr.String() + "/healthz"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("metrics server still answering 3s after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKafkaReachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler()) // any TCP listener stands for a broker
	up := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	down := up // closed now
	live := httptest.NewServer(http.NotFoundHandler())
	defer live.Close()
	liveAddr := strings.TrimPrefix(live.URL, "http://")
	ctx := context.Background()
	if err := metrics.KafkaReachable([]string{down, liveAddr}).Fn(ctx); err != nil {
		t.Errorf("KafkaReachable(down, up) err = %v, want nil", err)
	}
	if err := metrics.KafkaReachable([]string{down}).Fn(ctx); err == nil {
		t.Errorf("KafkaReachable(down) err = nil, want an error")
	}
}

func TestCheckListen(t *testing.T) {
	for addr, wantErr := range map[string]bool{"": false, "127.0.0.1:9101": false, ":9101": false, "9101": true} {
		if err := metrics.CheckListen(addr); (err != nil) != wantErr {
			t.Errorf("CheckListen(%q) err = %v, want error %t", addr, err, wantErr)
		}
	}
}

func TestParseListen(t *testing.T) {
	for in, want := range map[string]string{"off": "", "": "", "127.0.0.1:9101": "127.0.0.1:9101"} {
		if got, err := metrics.ParseListen(in); err != nil || got != want {
			t.Errorf("ParseListen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := metrics.ParseListen("9101"); err == nil {
		t.Error(`ParseListen("9101") err = nil, want "not host:port"`)
	}
}
