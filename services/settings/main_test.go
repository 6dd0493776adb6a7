package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/pkg/settings"
)

func TestParseConfig(t *testing.T) {
	base := []string{"-settings-key-file", "k", "-admins-file", "a"}
	c, err := parseConfig(base)
	if err != nil {
		t.Fatalf("parseConfig(required only) err = %v", err)
	}
	if c.listen != "127.0.0.1:8091" || c.metricsListen != "127.0.0.1:9105" || c.control != control.DefaultTopics() ||
		strings.Join(c.providers, ",") != "cloudru,vault,yandex" || !strings.HasPrefix(c.workerID, "settings-") {
		t.Fatalf("defaults = %+v", c)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-admins-file", "a"}, "-settings-key-file (BYOK_SETTINGS_KEY_FILE) is required"},
		{[]string{"-settings-key-file", "k"}, "-admins-file (BYOK_SETTINGS_ADMINS_FILE) is required"},
		{append(base, "-listen", "8091"), "is not host:port"},
		{append(base, "-providers", "vault,aws"), `"aws" is not one of`},
		{append(base, "-settings-topic", "x", "-revocations-topic", "x"), "must be set and differ"},
		{append(base, "-log-level", "loud"), "-log-level"},
		{append(base, "extra"), `unexpected argument "extra"`},
	} {
		if _, err := parseConfig(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%v) err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestRunOnKafka runs the service as main does, on an in-process Kafka-protocol broker with the
// real control store: a save through the API reaches another process's view of the control
// topics, with a credential that the worker's copy of the settings key opens; a revocation
// reaches it too; the change is on the audit topic; and the service stops cleanly.
func TestRunOnKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, audit.TopicAudit))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	dir := t.TempDir()
	kmsFile := filepath.Join(dir, "kms.json")
	if err := local.WriteKeyFile(kmsFile, "acme-kek"); err != nil {
		t.Fatal(err)
	}
	key, err := settings.GenerateKeyFile(filepath.Join(dir, "settings.key"))
	if err != nil {
		t.Fatal(err)
	}
	const token = "tok-ops"
	admins := filepath.Join(dir, "admins.json")
	os.WriteFile(admins, fmt.Appendf(nil, `{"callers": {"ops": {"token_sha256": %q, "tenants": ["acme"]}}}`, callers.TokenSHA256(token)), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := parseConfig([]string{"-listen", addr, "-brokers", strings.Join(brokers, ","), "-settings-key-file", filepath.Join(dir, "settings.key"),
		"-admins-file", admins, "-providers", "local", "-metrics-listen", "off", "-worker-id", "settings-test"})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(srvCtx, cfg, zerolog.New(&syncWriter{w: &logs})) }()
	defer stop()
	base := "http://" + addr
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run() = %v before serving", err)
		case <-ctx.Done():
			t.Fatal("service not serving within 60s")
		case <-time.After(20 * time.Millisecond):
		}
	}

	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cred, _ := json.Marshal(map[string]string{"key_file": kmsFile})
	body, _ := json.Marshal(map[string]any{"enabled": true, "provider": "local", "kek_id": "acme-kek", "credential": string(cred)})
	if status, b := call(http.MethodPut, "/v1/tenants/acme/settings", string(body)); status != http.StatusOK {
		t.Fatalf("PUT settings = %d %s", status, b)
	}
	// Read your writes: the service's own view has it when PUT returns.
	if status, b := call(http.MethodGet, "/v1/tenants/acme/settings", ""); status != http.StatusOK || !strings.Contains(b, `"revision":1`) {
		t.Fatalf("GET settings right after PUT = %d %s", status, b)
	}
	if status, b := call(http.MethodPost, "/v1/tenants/acme/revocations", `{"chat_id": "c-1", "reason": "test"}`); status != http.StatusCreated {
		t.Fatalf("POST revocation = %d %s", status, b)
	}

	// Another process (a worker) following the control topics sees both.
	view, err := control.Follow(ctx, brokers, cfg.control, zerolog.Nop(), control.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ts, ok := view.Settings("acme")
	if !ok {
		t.Fatal("a worker's view has no settings for acme")
	}
	c, err := settings.ToConfig(ts, key)
	if err != nil || !c.Enabled || c.KEKID != "acme-kek" || string(c.Credential) != string(cred) {
		t.Fatalf("worker's config = %v, %v; want enabled acme-kek with the credential", c, err)
	}
	if _, revoked := view.Revoked(scope.Scope{TenantID: "acme", ChatID: "c-1", Day: scope.DayOf(time.Now())}); !revoked {
		t.Fatal("a worker's view does not see the revocation of chat c-1")
	}

	events, err := audit.ReadTopic(ctx, brokers, audit.TopicAudit)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, ev := range events {
		ops = append(ops, ev.Operation+"/"+ev.Purpose)
	}
	if want := "describe/validate wrap/validate unwrap/validate settings_change/enable revoke/chat"; strings.Join(ops, " ") != want {
		t.Fatalf("audit topic = %v, want %s", ops, want)
	}
	for _, r := range audit.Verify(events) {
		if r.Problem != "" {
			t.Fatalf("audit chain broken: %+v", r)
		}
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run() after stop = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run() did not return within 30s of stop")
	}
	if strings.Contains(logs.String(), kmsFile) {
		t.Fatal("logs contain the credential")
	}
}

// syncWriter serialises a logger's writes into w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
