package forward_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/services/forwarder/forward"
)

const (
	acmeSecret   = "acme-secret-0123456789abcdef"
	globexSecret = "globex-secret-0123456789abcdef"
)

func TestParseTargets(t *testing.T) {
	env := map[string]string{"ACME_SECRET": "from-env-0123456789abcdef"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name, file string
		want       string // "" means valid; else a substring of the error
	}{
		{"valid inline", `{"tenants":{"acme":{"webhook":{"url":"https://siem.example/x","secret":"0123456789abcdef"}}}}`, ""},
		{"valid env and headers", `{"tenants":{"acme":{"webhook":{"url":"http://h:8080/x?token=t","secret_env":"ACME_SECRET","headers":{"Authorization":"Bearer z"}}}}}`, ""},
		{"empty file is no targets", `{"tenants":{}}`, ""},
		{"not json", `{"tenants":`, "not valid"},
		{"unknown field", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secretenv":"X"}}}}`, `unknown field "secretenv"`},
		{"no webhook", `{"tenants":{"acme":{}}}`, "tenant acme: webhook: required"},
		{"syslog refused", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef"},"syslog":{"network":"udp","address":"h:514"}}}}`, "tenant acme: syslog: not supported"},
		{"no url", `{"tenants":{"acme":{"webhook":{"secret":"0123456789abcdef"}}}}`, "webhook.url: required"},
		{"bad scheme", `{"tenants":{"acme":{"webhook":{"url":"ftp://h/x","secret":"0123456789abcdef"}}}}`, "webhook.url: scheme"},
		{"no host", `{"tenants":{"acme":{"webhook":{"url":"https:///x","secret":"0123456789abcdef"}}}}`, "webhook.url: host"},
		{"no secret", `{"tenants":{"acme":{"webhook":{"url":"https://h/x"}}}}`, "secret or secret_env is required"},
		{"both secrets", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef","secret_env":"ACME_SECRET"}}}}`, "not both"},
		{"empty env", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret_env":"MISSING"}}}}`, "secret_env: environment variable MISSING is empty"},
		{"short secret", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"short-SECRETVAL"}}}}`, "at least 16 bytes"},
		{"reserved header", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef","headers":{"x-byok-signature":"v"}}}}}`, "X-Byok-Signature is set by the forwarder"},
		{"bad header name", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef","headers":{"a b":"v"}}}}}`, "not a valid header name"},
		{"header injection", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef","headers":{"A":"v\r\nB: c"}}}}}`, "line break"},
		{"empty tenant id", `{"tenants":{"":{"webhook":{"url":"https://h/x","secret":"0123456789abcdef"}}}}`, "empty tenant id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := forward.ParseTargets([]byte(tc.file), getenv)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ParseTargets() err = %v, want nil", err)
				}
				for _, tg := range got {
					if s := tg.String(); strings.Contains(s, "0123456789abcdef") || strings.Contains(s, "from-env") ||
						strings.Contains(s, "token=") || strings.Contains(s, "Bearer") {
						t.Errorf("Target.String() = %q reveals a secret", s)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseTargets() err = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRETVAL") || strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("error %q quotes a secret", err)
			}
		})
	}
}

func TestEventJSONShape(t *testing.T) {
	ev := chainedEvents(t, "enc-a", 2, "acme")[1]
	ev.KekVersion, ev.ErrorCode, ev.FailedItems = "3", "access_denied", 1
	b, err := json.Marshal(forward.EventJSON(ev))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"schema_version": 1.0, "event_id": ev.EventId, "time": ev.Time.AsTime().UTC().Format(time.RFC3339Nano),
		"tenant_id": "acme", "provider": "vault", "kek_id": "byok-kek", "kek_version": "3", "operation": "unwrap",
		"dek_count": 1.0, "actor_service": "reader", "actor_user": "u-7", "purpose": "render", "result": "ok",
		"error_code": "access_denied", "failed_items": 1.0, "latency_ms": float64(ev.LatencyMs), "worker_id": "enc-a",
		"request_id": ev.RequestId, "seq": 1.0, "prev_hash": hex.EncodeToString(ev.PrevHash), "hash": hex.EncodeToString(ev.Hash),
		"chain_id": ev.ChainId,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("JSON %s = %v, want %v", k, m[k], v)
		}
	}
	if sc, _ := m["scopes"].([]any); len(sc) != 1 || sc[0].(map[string]any)["chat_id"] != "chat-1" || sc[0].(map[string]any)["day"] != "2026-12-04" {
		t.Errorf("JSON scopes = %v, want [{chat_id: chat-1, day: 2026-12-04}]", m["scopes"])
	}
	if len(m) != len(want)+1 {
		t.Errorf("JSON has %d fields, want %d (every AuditEvent field)", len(m), len(want)+1)
	}
	if len(ev.Hash) != 32 || m["hash"] == "" {
		t.Errorf("hash not carried: %v", m["hash"])
	}
}

// TestDeliversAllSignedAndSkipsUntargeted: every event of a tenant with a target arrives at its
// receiver once, exactly as EventJSON renders it, with a valid signature and the configured
// headers; a tenant without a target is skipped and committed.
func TestDeliversAllSignedAndSkipsUntargeted(t *testing.T) {
	t.Parallel()
	brokers := newKafka(t)
	acme, globex := newReceiver(t, "acme", acmeSecret), newReceiver(t, "globex", globexSecret)
	acmeTarget := acme.target("")
	acmeTarget.Webhook.Headers = map[string]string{"Authorization": "Bearer acme-token"}
	tg := targets(t, forward.TargetsFile{Tenants: map[string]forward.TargetConfig{"acme": acmeTarget, "globex": globex.target("")}})
	events := chainedEvents(t, "enc-a", 600, "acme", "globex", "initech")
	publish(t, brokers, events)

	logs := &syncBuffer{}
	f, stop := start(t, testConfig(brokers, "fwd-all"), tg, logs)
	waitFor(t, 60*time.Second, "all events delivered", func() bool { return acme.hasAll(events) && globex.hasAll(events) })
	waitFor(t, 20*time.Second, "lag 0", func() bool { return lag(t, brokers, "fwd-all") == 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}

	for _, r := range []*receiver{acme, globex} {
		distinct, total, _ := r.stats()
		if distinct != 200 || total != 200 || r.badSig != 0 {
			t.Errorf("%s received %d distinct events, %d total, %d bad signatures; want 200, 200, 0", r.tenant, distinct, total, r.badSig)
		}
	}
	for _, ev := range events {
		r := map[string]*receiver{"acme": acme, "globex": globex}[ev.TenantId]
		if r == nil {
			continue
		}
		got, _ := json.Marshal(r.events[ev.EventId])
		want, _ := json.Marshal(forward.EventJSON(ev))
		if string(got) != string(want) {
			t.Errorf("event %s received as %s, want %s", ev.EventId, got, want)
		}
	}
	for _, h := range acme.headers {
		if h.Get("Authorization") != "Bearer acme-token" || h.Get("Content-Type") != "application/json" {
			t.Errorf("acme request headers Authorization=%q Content-Type=%q", h.Get("Authorization"), h.Get("Content-Type"))
		}
	}
	if s := f.Stats(); s.Untargeted != 200 || s.Delivered != 400 || s.Held != 0 {
		t.Errorf("Stats() = %+v, want Untargeted 200, Delivered 400, Held 0", s)
	}
}

// TestOutageRestartNoLoss: acme's receiver answers 500; globex (healthy) still receives
// everything; acme's events stay uncommitted; a restart mid-outage loses nothing; once acme's
// receiver is back every event arrives (duplicates recognisable by event id).
func TestOutageRestartNoLoss(t *testing.T) {
	t.Parallel()
	brokers := newKafka(t)
	acme, globex := newReceiver(t, "acme", acmeSecret), newReceiver(t, "globex", globexSecret)
	acme.setFail(http.StatusInternalServerError)
	tg := targets(t, forward.TargetsFile{Tenants: map[string]forward.TargetConfig{"acme": acme.target(""), "globex": globex.target("")}})
	events := chainedEvents(t, "enc-a", 400, "acme", "globex")
	publish(t, brokers, events)

	logs := &syncBuffer{}
	cfg := testConfig(brokers, "fwd-outage")
	_, stop := start(t, cfg, tg, logs)
	waitFor(t, 60*time.Second, "globex receives everything while acme is down", func() bool { return globex.hasAll(events) })
	waitFor(t, 20*time.Second, "acme retried", func() bool { _, _, a := acme.stats(); return a >= 4 })
	time.Sleep(500 * time.Millisecond) // several commit ticks
	if l := lag(t, brokers, "fwd-outage"); l < 200 {
		t.Errorf("lag = %d during acme's outage, want >= 200 (acme's events uncommitted)", l)
	}
	if err := stop(); !errors.Is(err, forward.ErrAbandoned) {
		t.Errorf("Run() during outage = %v, want ErrAbandoned", err)
	}
	if d, _, _ := acme.stats(); d != 0 {
		t.Fatalf("acme accepted %d events while answering 500", d)
	}
	if !strings.Contains(string(logs.Bytes()), `"status":500`) {
		t.Errorf("logs do not mention the 500s")
	}

	// Restart while still down, then recover.
	logs2 := &syncBuffer{}
	f2, stop2 := start(t, cfg, tg, logs2)
	waitFor(t, 30*time.Second, "acme retried after restart", func() bool { return f2.Stats().DeliveryFailures >= 2 })
	acme.setFail(0)
	waitFor(t, 60*time.Second, "acme receives everything after recovery", func() bool { return acme.hasAll(events) })
	waitFor(t, 20*time.Second, "lag 0", func() bool { return lag(t, brokers, "fwd-outage") == 0 })
	if err := stop2(); err != nil {
		t.Fatalf("Run() after recovery = %v, want nil", err)
	}
	for _, r := range []*receiver{acme, globex} {
		distinct, total, _ := r.stats()
		if distinct != 200 {
			t.Errorf("%s: %d distinct events, want 200", r.tenant, distinct)
		}
		t.Logf("%s: %d distinct events, %d deliveries (%d duplicates, detected by event id)", r.tenant, distinct, total, total-distinct)
	}
}

// TestRejectedIsRetriedNotDropped: a 4xx is logged as an error and retried (slowly) until the
// receiver accepts.
func TestRejectedIsRetriedNotDropped(t *testing.T) {
	t.Parallel()
	brokers := newKafka(t)
	acme := newReceiver(t, "acme", acmeSecret)
	acme.setFail(http.StatusForbidden)
	tg := targets(t, forward.TargetsFile{Tenants: map[string]forward.TargetConfig{"acme": acme.target("")}})
	events := chainedEvents(t, "enc-a", 60, "acme")
	publish(t, brokers, events)
	logs := &syncBuffer{}
	f, stop := start(t, testConfig(brokers, "fwd-rejected"), tg, logs)
	waitFor(t, 30*time.Second, "rejections", func() bool { return f.Stats().Rejections >= 3 })
	if l := lag(t, brokers, "fwd-rejected"); l != 60 {
		t.Errorf("lag = %d while rejected, want 60", l)
	}
	acme.setFail(0)
	waitFor(t, 30*time.Second, "delivered after the receiver is fixed", func() bool { return acme.hasAll(events) })
	waitFor(t, 20*time.Second, "lag 0", func() bool { return lag(t, brokers, "fwd-rejected") == 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if !strings.Contains(string(logs.Bytes()), `"level":"error","tenant_id":"acme"`) || !strings.Contains(string(logs.Bytes()), `"status":403`) {
		t.Errorf("rejection not logged as an error with its status:\n%s", logs.Bytes())
	}
}

// TestNoSecretsOrKeyMaterialLeak drives real KMS calls through the audit wrapper with a planted
// canary DEK and message body, forwards the resulting events, and scans everything sent and
// logged: no DEK, body, webhook secret, header token or URL token appears. A second tenant's
// receiver is unreachable so the error paths log too.
func TestNoSecretsOrKeyMaterialLeak(t *testing.T) {
	t.Parallel()
	brokers := newKafka(t)
	dir := t.TempDir()
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	keyFile := filepath.Join(dir, "keys.json")
	kf, _ := json.Marshal(local.File{Keys: map[string]*local.Key{"dev-kek": {Primary: "1", Versions: map[string]string{"1": base64.StdEncoding.EncodeToString(kek)}}}})
	if err := os.WriteFile(keyFile, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	canaryDEK := []byte("CANARY-DEK-7f3a9c-0123456789abcd") // 32 bytes
	canaryBody := "CANARY-BODY-do-not-forward-5b1e"

	sink := audit.NewKafkaSink(brokers, topic)
	defer sink.Close()
	alog := audit.NewLog(sink, "enc-canary")
	for _, tenant := range []string{"acme", "globex"} {
		k := audit.Wrap(local.New(keyFile, "dev-kek"), tenant, alog, audit.Access{ActorService: "encryptor", Purpose: "encrypt"})
		sc := scope.Scope{TenantID: tenant, ChatID: "chat-1", Day: scope.DayOf(time.Now())}
		res, err := k.Wrap(context.Background(), []kms.WrapRequest{{DEK: canaryDEK, Context: sc.KMSContext()}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("Wrap() = %v, %v", res, err)
		}
		un, err := k.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: res[0].WrappedDEK, Context: sc.KMSContext()}})
		if err != nil || un[0].Err != nil || string(un[0].DEK) != string(canaryDEK) {
			t.Fatalf("Unwrap() = %v, %v", un, err)
		}
		_ = canaryBody // the body never reaches the KMS seam; it is scanned for below all the same
	}

	acme := newReceiver(t, "acme", acmeSecret)
	acme.setFail(http.StatusBadGateway)
	acmeTarget := acme.target("?token=CANARY-URL-TOKEN")
	acmeTarget.Webhook.Headers = map[string]string{"Authorization": "Bearer CANARY-HEADER-TOKEN"}
	down := newReceiver(t, "globex", globexSecret)
	down.srv.Close() // connection refused
	downTarget := down.target("?token=CANARY-URL-TOKEN-2")
	downTarget.Webhook.URL = strings.Replace(downTarget.Webhook.URL, "http://", "http://user:CANARY-USERINFO@", 1)
	tg := targets(t, forward.TargetsFile{Tenants: map[string]forward.TargetConfig{"acme": acmeTarget, "globex": downTarget}})

	logs := &syncBuffer{}
	f, stop := start(t, testConfig(brokers, "fwd-canary"), tg, logs)
	waitFor(t, 30*time.Second, "failures on both tenants", func() bool { return f.Stats().DeliveryFailures >= 4 })
	acme.setFail(0)
	waitFor(t, 30*time.Second, "acme's 2 events", func() bool { d, _, _ := acme.stats(); return d == 2 })
	_ = stop()

	acme.mu.Lock()
	var sent strings.Builder
	for _, b := range acme.bodies {
		sent.Write(b)
	}
	acme.mu.Unlock()
	logText := string(logs.Bytes())
	if !strings.Contains(logText, "connection refused") || !strings.Contains(logText, `"status":502`) {
		t.Fatalf("expected error-path logs, got:\n%s", logText)
	}
	forbidden := map[string]string{
		"DEK (raw)": string(canaryDEK), "DEK (hex)": hex.EncodeToString(canaryDEK),
		"DEK (base64)": base64.StdEncoding.EncodeToString(canaryDEK), "KEK (base64)": base64.StdEncoding.EncodeToString(kek),
		"body": canaryBody, "acme secret": acmeSecret, "globex secret": globexSecret,
		"header token": "CANARY-HEADER-TOKEN", "URL token": "CANARY-URL-TOKEN", "userinfo": "CANARY-USERINFO",
	}
	for what, s := range forbidden {
		if strings.Contains(logText, s) {
			t.Errorf("logs contain the %s", what)
		}
		if strings.Contains(sent.String(), s) {
			t.Errorf("webhook bodies contain the %s", what)
		}
	}
	// And the bodies did carry the events (so the scan looked at something).
	if !strings.Contains(sent.String(), `"operation":"wrap"`) || !strings.Contains(sent.String(), `"operation":"unwrap"`) {
		t.Errorf("bodies lack the wrap/unwrap events: %s", sent.String())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  forward.Config
		want string
	}{
		{"no brokers", forward.Config{}, "brokers"},
		{"negative batch size", forward.Config{Brokers: []string{"b"}, BatchSize: -1}, "batch-size"},
		{"negative batch wait", forward.Config{Brokers: []string{"b"}, BatchWait: -time.Second}, "batch-wait"},
		{"negative timeout", forward.Config{Brokers: []string{"b"}, Timeout: -time.Second}, "timeout"},
		{"min above max", forward.Config{Brokers: []string{"b"}, RetryMin: time.Minute, RetryMax: time.Second}, "retry backoff"},
		{"batch above held", forward.Config{Brokers: []string{"b"}, BatchSize: 10, MaxHeld: 5}, "max-held"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestHoldIsBounded: with a tenant's receiver down, at most MaxHeld events wait in memory
// (fetching pauses), and nothing is lost once the receiver is back.
func TestHoldIsBounded(t *testing.T) {
	t.Parallel()
	brokers := newKafka(t)
	acme := newReceiver(t, "acme", acmeSecret)
	acme.setFail(http.StatusServiceUnavailable)
	tg := targets(t, forward.TargetsFile{Tenants: map[string]forward.TargetConfig{"acme": acme.target("")}})
	events := chainedEvents(t, "enc-a", 400, "acme")
	publish(t, brokers, events)
	cfg := testConfig(brokers, "fwd-bounded")
	cfg.MaxHeld = 60
	f, stop := start(t, cfg, tg, &syncBuffer{})
	waitFor(t, 30*time.Second, "hold filled", func() bool { return f.Stats().Held == 60 })
	time.Sleep(time.Second)
	if s := f.Stats(); s.Held != 60 || s.Consumed > 61 {
		t.Errorf("Stats() = %+v while down, want Held 60 and at most 61 consumed (fetching paused)", s)
	}
	acme.setFail(0)
	waitFor(t, 60*time.Second, "all delivered", func() bool { return acme.hasAll(events) })
	waitFor(t, 20*time.Second, "lag 0", func() bool { return lag(t, brokers, "fwd-bounded") == 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v", err)
	}
}
