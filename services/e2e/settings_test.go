package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/producer"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/services/reader/api"
)

// storedLog collects a storage topic's records by message id, as the messenger's store would.
type storedLog struct {
	mu   sync.Mutex
	byID map[string]*byokv1.StoredMessage
}

func (s *storedLog) get(id string) (*byokv1.StoredMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.byID[id]
	return m, ok
}

func collectStored(ctx context.Context, t *testing.T, brokers []string, topic, group string) *storedLog {
	s := &storedLog{byID: map[string]*byokv1.StoredMessage{}}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: group, StartOffset: kafka.FirstOffset,
		MaxWait: 100 * time.Millisecond})
	go func() {
		defer r.Close()
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				return
			}
			var sm byokv1.StoredMessage
			if err := proto.Unmarshal(m.Value, &sm); err != nil {
				t.Errorf("storage record is not a StoredMessage: %v", err)
				return
			}
			s.mu.Lock()
			s.byID[sm.MessageId] = &sm
			s.mu.Unlock()
		}
	}()
	return s
}

// TestSettingsEnableLive: a tenant admin turns byok on through the settings service (validated
// against real Vault); two running encryptors, started without any tenants file, encrypt the
// tenant's new messages within seconds, without a restart; a reader that knows the tenant only
// from the saved settings opens them; turning byok off goes back to storing new messages normally;
// the Vault token never appears in clear in any log or topic.
func TestSettingsEnableLive(t *testing.T) {
	brokers := strings.Split(env(t, "BYOK_TEST_KAFKA_BROKERS"), ",")
	vaultAddr := env(t, "BYOK_TEST_VAULT_ADDR")
	rootToken := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if rootToken == "" {
		rootToken = "root"
	}
	run := fmt.Sprintf("e2e-set-%d", time.Now().UnixNano())
	tenantID := "acme-" + run
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topics := struct {
		pipelineTopics
		settings, revocations string
	}{newPipelineTopics(t, ctx, brokers, run), run + ".settings", run + ".revocations"}

	// The customer's Vault: a derived key and a token limited to it — the credential pasted in the page.
	admin := vaultAdmin(t, vaultAddr, rootToken)
	key, vaultToken := run, "CANARY-set-token-"+strings.ReplaceAll(run, "-", "")
	derivedKeysAndToken(t, admin, run, vaultToken, key)

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "settings.key")
	if _, err := settings.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	const adminToken, callerToken = "e2e-admin-token-alice", "e2e-caller-token-render"
	adminsFile, callersFile := filepath.Join(dir, "admins.json"), filepath.Join(dir, "callers.json")
	os.WriteFile(adminsFile, []byte(fmt.Sprintf(`{"callers": {"alice": {"token_sha256": %q, "tenants": [%q]}}}`, callers.TokenSHA256(adminToken), tenantID)), 0o600)
	os.WriteFile(callersFile, []byte(fmt.Sprintf(`{"callers": {"render-svc": {"token_sha256": %q, "tenants": [%q]}}}`, callers.TokenSHA256(callerToken), tenantID)), 0o600)

	common := []string{"BYOK_KAFKA_BROKERS=" + strings.Join(brokers, ","), "BYOK_AUDIT_TOPIC=" + topics.audit,
		"BYOK_SETTINGS_TOPIC=" + topics.settings, "BYOK_REVOCATIONS_TOPIC=" + topics.revocations,
		"BYOK_SETTINGS_KEY_FILE=" + keyFile, "BYOK_METRICS_LISTEN=127.0.0.1:0"}
	settingsListen := freePort(t)
	procs := []*proc{start(t, "settings", binary(t, "settings"), append(common, "BYOK_SETTINGS_LISTEN="+settingsListen,
		"BYOK_SETTINGS_ADMINS_FILE="+adminsFile, "BYOK_SETTINGS_PROVIDERS=vault", "BYOK_WORKER_ID=settings-e2e")...)}
	waitHTTP(t, "http://"+settingsListen+"/healthz", 60*time.Second)
	for i := range 2 {
		id := fmt.Sprintf("enc-%d", i+1)
		procs = append(procs, start(t, id, binary(t, "encryptor"), append(common, "BYOK_WORKER_ID="+id,
			"BYOK_PLAINTEXT_TOPIC="+topics.in, "BYOK_STORAGE_TOPIC="+topics.stored, "BYOK_DEADLETTER_TOPIC="+topics.dead,
			"BYOK_ENCRYPTOR_GROUP="+run, "BYOK_UNENCRYPTED_TENANTS=passthrough", "BYOK_SESSION_TIMEOUT=6s",
			"BYOK_CREATE_TOPICS=false")...))
	}
	readerListen := freePort(t)
	procs = append(procs, start(t, "reader", binary(t, "reader"), append(common, "BYOK_READER_LISTEN="+readerListen,
		"BYOK_READER_CALLERS_FILE="+callersFile, "BYOK_WORKER_ID=reader-e2e")...))

	stored := collectStored(ctx, t, brokers, topics.stored, run+"-check")
	pub, err := producer.New(brokers, producer.WithTopic(topics.in), producer.WithBatchTimeout(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	bodyOf := func(id string) string { return "CANARY-BODY-settings " + id }
	send := func(i int) (string, time.Time) {
		e := producer.NewEvent(tenantID, fmt.Sprintf("chat-%d", i%10), "user-1", "text/plain", nil)
		e.MessageId = fmt.Sprintf("%s-m%05d", run, i)
		e.Body = []byte(bodyOf(e.MessageId))
		at := time.Now()
		if err := pub.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		return e.MessageId, at
	}
	settingsReq := func(body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, "http://"+settingsListen+"/v1/tenants/"+tenantID+"/settings", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}

	// byok off: the tenant's messages are stored as they are (passthrough).
	before, _ := send(0)
	waitFor(t, 60*time.Second, "a message stored before byok is on", func() bool { _, ok := stored.get(before); return ok })
	if m, _ := stored.get(before); m.GetEnvelope() != nil {
		t.Fatal("a message was encrypted before byok was turned on")
	}

	// A wrong key id is refused with the reason, and nothing changes.
	cred := fmt.Sprintf(`{"address": %q, "token": %q}`, vaultAddr, vaultToken)
	if status, body := settingsReq(fmt.Sprintf(`{"enabled": true, "provider": "vault", "kek_id": "no-such-key-%s", "credential": %s}`, run, cred)); status != http.StatusUnprocessableEntity {
		t.Fatalf("enable with a wrong key id = %d %s, want 422", status, body)
	}
	// Turn it on: validated through Vault, saved, followed by every worker.
	status, body := settingsReq(fmt.Sprintf(`{"enabled": true, "provider": "vault", "kek_id": %q, "credential": %s}`, key, cred))
	enabledAt := time.Now()
	if status != http.StatusOK {
		t.Fatalf("enable = %d %s, want 200", status, body)
	}
	if strings.Contains(body, vaultToken) {
		t.Fatal("the settings API returned the credential")
	}

	// Messages sent from now on, one every 20 ms for 4 s.
	type sentMsg struct {
		id string
		at time.Time
	}
	var sent []sentMsg
	for i := 1; i <= 200; i++ {
		id, at := send(i)
		sent = append(sent, sentMsg{id, at})
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 60*time.Second, "every message stored", func() bool {
		for _, s := range sent {
			if _, ok := stored.get(s.id); !ok {
				return false
			}
		}
		return true
	})
	lastPlain, inClear := time.Duration(-1), 0
	var envelopes []api.DecryptItem
	for _, s := range sent {
		m, _ := stored.get(s.id)
		if m.GetEnvelope() == nil {
			lastPlain = max(lastPlain, s.at.Sub(enabledAt))
			inClear++
			continue
		}
		if bytes.Contains(m.GetEnvelope(), []byte("CANARY-BODY")) {
			t.Fatal("an envelope holds its body in clear")
		}
		envelopes = append(envelopes, api.DecryptItem{MessageID: s.id, EnvelopeBase64: base64.StdEncoding.EncodeToString(m.GetEnvelope())})
	}
	t.Logf("enable saved → encrypted on both encryptors: %d of %d messages sent after the save (one per 20 ms) stored in clear", inClear, len(sent))
	if inClear > 0 {
		t.Logf("the last message stored in clear was sent %s after the save", lastPlain)
	}
	if lastPlain > 10*time.Second || len(envelopes) < len(sent)/2 {
		t.Fatalf("byok not applied within seconds: last message in clear sent %s after enabling", lastPlain)
	}
	last, _ := stored.get(sent[len(sent)-1].id)
	if last.GetEnvelope() == nil {
		t.Fatal("the last message sent is not encrypted")
	}

	// The reader knows the tenant only from the saved settings, and opens what was encrypted.
	rc := readerClient{name: "reader", listen: readerListen, token: callerToken}
	waitFor(t, 30*time.Second, "reader serving", func() bool { _, err := rc.decrypt(envelopes[:1]); return err == nil })
	res, err := rc.decrypt(envelopes)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		b, _ := base64.StdEncoding.DecodeString(r.BodyBase64)
		if r.Error != "" || string(b) != bodyOf(r.MessageID) {
			t.Fatalf("reader: %s = %q, error %q", r.MessageID, b, r.Error)
		}
	}

	// Turn it off: new messages are stored normally again, soon.
	if status, body := settingsReq(`{"enabled": false}`); status != http.StatusOK {
		t.Fatalf("disable = %d %s, want 200", status, body)
	}
	waitFor(t, 20*time.Second, "a message stored in clear after disabling", func() bool {
		id, _ := send(1000 + int(time.Now().UnixMilli()%100000))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if m, ok := stored.get(id); ok {
				return m.GetEnvelope() == nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	})

	// The settings change is on the audit topic, by alice; the token is in no log and no topic in clear.
	var changes int
	for _, ev := range readAudit(t, ctx, brokers, topics.audit) {
		if ev.Operation == audit.OpSettingsChange && ev.ActorUser == "alice" && ev.Result == audit.ResultOK {
			changes++
		}
	}
	if changes != 2 {
		t.Fatalf("settings_change events by alice = %d, want 2 (enable, disable)", changes)
	}
	for _, p := range procs {
		if bytes.Contains(p.out.Bytes(), []byte(vaultToken)) {
			t.Fatalf("the Vault token appears in %s's log", p.name)
		}
	}
	for _, topic := range []string{topics.settings, topics.audit, topics.stored} {
		if n := countContaining(t, ctx, brokers, topic, []byte(vaultToken)); n > 0 {
			t.Fatalf("the Vault token appears in clear in %d records of %s", n, topic)
		}
	}
}

// countContaining counts the records of every partition of topic whose key or value contains needle.
func countContaining(t *testing.T, ctx context.Context, brokers []string, topic string, needle []byte) int {
	t.Helper()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	n, seen := 0, 0
	for _, p := range parts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		for {
			m, err := r.ReadMessage(rctx)
			if err != nil {
				break
			}
			seen++
			if bytes.Contains(m.Key, needle) || bytes.Contains(m.Value, needle) {
				n++
			}
		}
		cancel()
		r.Close()
	}
	if seen == 0 {
		t.Fatalf("no records read from %s: the scan proves nothing", topic)
	}
	return n
}
