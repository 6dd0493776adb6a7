package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/producer"
)

// TestMetricsFollowThePipeline runs the encryptor's run() against an in-process broker and the
// local KMS, scrapes /metrics before and after publishing n events, and checks that the key
// series move — and that neither a planted body nor a planted credential shows up in the scrape.
func TestMetricsFollowThePipeline(t *testing.T) {
	const (
		n             = 40
		canaryBody    = "CANARY-body-5d1e0b"
		canaryToken   = "CANARY-token-93ac44"
		canaryKeyPath = "CANARY-keydir-1f6b"
	)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(2, kafkax.TopicPlaintext, kafkax.TopicStored, kafkax.TopicDeadLetter, audit.TopicAudit))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	keyDir := filepath.Join(t.TempDir(), canaryKeyPath)
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(keyDir, "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-acme"); err != nil {
		t.Fatal(err)
	}
	tenants, _ := json.Marshal(map[string]any{"tenants": map[string]any{
		"acme": map[string]any{"enabled": true, "provider": "local", "kek_id": "kek-acme",
			"credential": map[string]string{"key_file": keyFile}},
		// Configured but never used: its credential must not reach the metrics either.
		"globex": map[string]any{"enabled": true, "provider": "vault", "kek_id": "kek-globex",
			"credential": map[string]string{"address": "http://127.0.0.1:1", "token": canaryToken}},
	}})
	addr := freeAddr(t)
	cfg, err := parseConfig([]string{
		"-brokers", strings.Join(brokers, ","), "-tenants", string(tenants), "-create-topics=false",
		"-session-timeout", "6s", "-metrics-listen", addr, "-worker-id", "metrics-test",
	})
	if err != nil {
		t.Fatalf("parseConfig() err = %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, zerolog.Nop()) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run() err = %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("run() did not return 30s after cancel")
		}
	}()
	base := "http://" + addr

	waitFor(t, 20*time.Second, "/readyz 200", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == http.StatusOK
	})
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d %q, want 200", code, body)
	}
	var before string
	waitFor(t, 10*time.Second, "worker series registered", func() bool {
		_, before = get(t, base+"/metrics")
		_, ok := value(before, "byok_messages_encrypted_total", nil)
		return ok
	})
	encBefore, _ := value(before, "byok_messages_encrypted_total", nil)

	pub, err := producer.New(brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	events := make([]*byokv1.MessageEvent, 0, n)
	for i := range n {
		events = append(events, producer.NewEvent("acme", fmt.Sprintf("chat-%d", i%4), "u-1", "text/plain",
			[]byte(fmt.Sprintf("%s %d", canaryBody, i))))
	}
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	if err := pub.Publish(pctx, events...); err != nil {
		t.Fatalf("Publish() err = %v, want nil", err)
	}

	var after string
	waitFor(t, 40*time.Second, fmt.Sprintf("byok_messages_encrypted_total to grow by %d", n), func() bool {
		_, after = get(t, base+"/metrics")
		v, _ := value(after, "byok_messages_encrypted_total", nil)
		return v-encBefore >= n
	})
	if v, _ := value(after, "byok_messages_encrypted_total", nil); v-encBefore != n {
		t.Errorf("byok_messages_encrypted_total grew by %v, want %d", v-encBefore, n)
	}
	checks := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"byok_messages_consumed_total", nil, n},
		{"byok_kms_calls_total", map[string]string{"provider": "local", "operation": "wrap", "result": "ok", "service": "encryptor"}, 1},
		{"byok_kms_call_deks_count", map[string]string{"provider": "local", "operation": "wrap"}, 1},
		{"byok_kms_call_deks_sum", map[string]string{"provider": "local", "operation": "wrap"}, 4}, // 4 chats → 4 scopes
		{"byok_dek_cache_misses_total", nil, 4},
		{"byok_dek_cache_size", nil, 4},
		{"byok_dek_cache_hits_total", nil, 0},
		{"byok_dek_cache_evictions_total", nil, 0},
		{"byok_encrypt_batch_duration_seconds_count", nil, 1},
		{"byok_messages_dead_lettered_total", nil, 0},
		{"byok_messages_held", nil, 0},
		{"byok_consumer_lag_records", map[string]string{"topic": kafkax.TopicPlaintext}, 0},
	}
	for _, c := range checks {
		v, ok := value(after, c.name, c.labels)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %t), want >= %v", c.name, c.labels, v, ok, c.min)
		}
	}
	for _, canary := range []string{canaryBody, canaryToken, canaryKeyPath, "acme", "globex", "chat-"} {
		if strings.Contains(after, canary) {
			t.Errorf("/metrics contains %q; bodies, credentials and tenant or chat ids must never reach metrics", canary)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// value finds the sample of metric name whose labels include want, in Prometheus text format.
func value(text, name string, want map[string]string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, val := line[:sp], line[sp+1:]
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		have := map[string]string{}
		for pair := range strings.SplitSeq(strings.TrimSuffix(labels, "}"), ",") {
			if k, v, ok := strings.Cut(pair, "="); ok {
				have[k] = strings.Trim(v, `"`)
			}
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		return f, err == nil
	}
	return 0, false
}
