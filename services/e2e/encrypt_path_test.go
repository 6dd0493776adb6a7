package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	"github.com/byok-io/byok/pkg/decrypt"
	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/kms/yandex/yandexemu"
	"github.com/byok-io/byok/pkg/tenant"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

func env(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is required (BYOK_REQUIRE_INTEGRATION=1); run `make test`", name)
		}
		t.Skipf("%s not set: run `make test` for the end-to-end tests", name)
	}
	return v
}

// TestEncryptPathEndToEnd is the encrypt path's acceptance test: 10,000 messages over 100 chats
// and 3 tenants go through the ingest API; two encryptor processes consume them and one is
// killed mid-run. Every message must reach the storage topic encrypted and open to its original
// body through Vault; a moved envelope must not open; Vault must have been called far fewer times
// than there are messages; and no planted canary may appear in any log line.
func TestEncryptPathEndToEnd(t *testing.T) {
	brokers := strings.Split(env(t, "BYOK_TEST_KAFKA_BROKERS"), ",")
	vaultAddr := env(t, "BYOK_TEST_VAULT_ADDR")
	clickhouseAddr := env(t, "BYOK_TEST_CLICKHOUSE_ADDR")
	rootToken := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if rootToken == "" {
		rootToken = "root"
	}
	const (
		messages = 10_000
		chats    = 100
		tenants  = 3
		// yandexTenant (tenant-3) keeps its KEK in the Yandex KMS emulator; the others in Vault.
		yandexTenant = 2
	)
	run := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topics := newPipelineTopics(t, ctx, brokers, run)

	// Vault: a derived transit key per tenant, a token (the planted credential canary) whose
	// policy allows only what byok needs, and a file audit device that counts every call.
	admin := vaultAdmin(t, vaultAddr, rootToken)
	tokenCanary := "CANARY-TOKEN-" + strings.ReplaceAll(run, "-", "")
	var keys []string
	tenantIDs := make([]string, tenants)
	for i := range tenantIDs {
		tenantIDs[i] = fmt.Sprintf("tenant-%d", i+1)
		if i == yandexTenant {
			continue
		}
		keys = append(keys, run+"-"+tenantIDs[i])
	}
	derivedKeysAndToken(t, admin, run, tokenCanary, keys...)
	auditFile := filepath.Join(t.TempDir(), "vault-audit.log")
	if err := admin.Sys().EnableAuditWithOptions(run, &vaultapi.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": auditFile}}); err != nil {
		t.Fatal(err)
	}
	defer admin.Sys().DisableAudit(run)

	// One tenant keeps its KEK in Yandex Cloud KMS (the emulator, through the real SDK), with an
	// authorized key whose private key is a planted canary too.
	yc := yandexemu.Start(t)
	yandexKey := run + "-yandex-kek"
	if err := yc.CreateKey(yandexKey); err != nil {
		t.Fatal(err)
	}
	authorizedKey, err := yc.NewAuthorizedKey("sa-" + run)
	if err != nil {
		t.Fatal(err)
	}
	if err := yc.Grant("sa-"+run, yandexKey); err != nil {
		t.Fatal(err)
	}
	var ak struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(authorizedKey, &ak); err != nil {
		t.Fatal(err)
	}
	privateKeyCanary := strings.Split(strings.TrimSpace(ak.PrivateKey), "\n")[2] // a line of the PEM body

	// The tenants file, with the credentials inline (the worst case for leaks).
	cred, _ := json.Marshal(map[string]string{"address": vaultAddr, "token": tokenCanary})
	ycred, _ := json.Marshal(map[string]any{"authorized_key": json.RawMessage(authorizedKey), "endpoint": yc.Addr()})
	tf := tenant.File{Tenants: map[string]tenant.Config{}}
	for i, id := range tenantIDs {
		if i == yandexTenant {
			tf.Tenants[id] = tenant.Config{Enabled: true, Provider: "yandex", KEKID: yandexKey, Credential: ycred}
			continue
		}
		tf.Tenants[id] = tenant.Config{Enabled: true, Provider: "vault", KEKID: keys[i], Credential: cred} // the Yandex tenant is the last one
	}
	tenantsFile := filepath.Join(t.TempDir(), "tenants.json")
	b, _ := json.Marshal(tf)
	if err := os.WriteFile(tenantsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	// Processes: ingest, and two encryptors in one consumer group.
	common := []string{
		"BYOK_KAFKA_BROKERS=" + strings.Join(brokers, ","), "BYOK_PLAINTEXT_TOPIC=" + topics.in,
		"BYOK_LOG_LEVEL=debug",
	}
	listen := freePort(t)
	ingest := start(t, "ingest", binary(t, "ingest"), append(common, "BYOK_INGEST_LISTEN="+listen)...)
	waitHTTP(t, "http://"+listen+"/healthz", 30*time.Second)
	encEnv := append(common, "BYOK_STORAGE_TOPIC="+topics.stored, "BYOK_DEADLETTER_TOPIC="+topics.dead, "BYOK_AUDIT_TOPIC="+topics.audit,
		"BYOK_ENCRYPTOR_GROUP="+run, "BYOK_TENANTS_FILE="+tenantsFile, "BYOK_SESSION_TIMEOUT=6s",
		"BYOK_STATS_INTERVAL=500ms", "BYOK_CREATE_TOPICS=false", "BYOK_KMS_INSECURE_LOOPBACK=true")
	// The auditor stores the audit topic in ClickHouse, in a database of this run's own.
	chDB := strings.NewReplacer("-", "_", ".", "_").Replace(run)
	auditor := start(t, "auditor", binary(t, "auditor"), append(common, "BYOK_AUDIT_TOPIC="+topics.audit,
		"BYOK_AUDITOR_GROUP="+run+"-auditor", "BYOK_CLICKHOUSE_ADDR="+clickhouseAddr, "BYOK_CLICKHOUSE_DATABASE="+chDB,
		"BYOK_CREATE_TOPICS=false", "BYOK_SESSION_TIMEOUT=6s", "BYOK_AUDITOR_FLUSH_INTERVAL=200ms", "BYOK_METRICS_LISTEN="+freePort(t))...)
	encA := start(t, "encryptor-a", binary(t, "encryptor"), append(encEnv, "BYOK_WORKER_ID=enc-a", "BYOK_METRICS_LISTEN="+freePort(t))...)
	encB := start(t, "encryptor-b", binary(t, "encryptor"), append(encEnv, "BYOK_WORKER_ID=enc-b", "BYOK_METRICS_LISTEN="+freePort(t))...)

	// Send 10,000 messages in batches of 100, paced so the kill lands mid-run.
	const bodyCanary = "CANARY-BODY-e2e"
	sent := map[string]string{} // message id → body
	sentChat := map[string]string{}
	start := time.Now()
	for batch := 0; batch < messages/100; batch++ {
		var req struct {
			Messages []map[string]string `json:"messages"`
		}
		for i := batch * 100; i < (batch+1)*100; i++ {
			chat := i % chats
			id := fmt.Sprintf("%s-m%05d", run, i)
			body := fmt.Sprintf("%s %d: привет, this is message %d of chat %d", bodyCanary, i, i, chat)
			sent[id] = body
			sentChat[id] = fmt.Sprintf("chat-%d", chat)
			req.Messages = append(req.Messages, map[string]string{
				"tenant_id": tenantIDs[chat%tenants], "chat_id": sentChat[id], "message_id": id,
				"sender_id": "user-1", "body": body,
			})
		}
		postBatch(t, listen, req)
		if batch == 40 {
			// Kill one encryptor as a crash would, once it has done some work.
			waitFor(t, 30*time.Second, "encryptor-a to write records", func() bool { return written(encA.out.Bytes()) > 0 })
			encA.kill()
			t.Logf("killed encryptor-a after %d messages posted; it had written %d records", (batch+1)*100, written(encA.out.Bytes()))
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Logf("posted %d messages through the ingest API in %v", messages, time.Since(start).Round(time.Millisecond))

	// Every message id must reach the storage topic.
	records := readStored(t, ctx, brokers, topics.stored, run, sent, 3*time.Minute)
	encB.stop(t, 30*time.Second)
	ingest.stop(t, 30*time.Second)

	seen := map[string]int{}
	var envelopes []*byokv1.StoredMessage
	var storageBytes [][]byte
	for _, m := range records {
		var sm byokv1.StoredMessage
		if err := proto.Unmarshal(m.Value, &sm); err != nil {
			t.Fatalf("storage record at %d/%d is not a StoredMessage: %v", m.Partition, m.Offset, err)
		}
		seen[sm.MessageId]++
		envelopes = append(envelopes, &sm)
		storageBytes = append(storageBytes, m.Key, m.Value)
		for _, h := range m.Headers {
			storageBytes = append(storageBytes, h.Value)
		}
		if sm.GetEnvelope() == nil {
			t.Fatalf("message %s stored without an envelope", sm.MessageId)
		}
		if string(m.Key) != sm.TenantId+"/"+sm.ChatId {
			t.Fatalf("message %s keyed %q, want tenant/chat", sm.MessageId, m.Key)
		}
	}
	dups := 0
	for id := range sent {
		if seen[id] == 0 {
			t.Fatalf("message %s never reached the storage topic", id)
		}
		dups += seen[id] - 1
	}
	t.Logf("storage topic: %d records for %d messages (%d duplicates from the replay after the kill)", len(records), messages, dups)

	// No plaintext body anywhere in the storage topic's bytes.
	for _, b := range storageBytes {
		if bytes.Contains(b, []byte(bodyCanary)) || bytes.Contains(b, []byte("привет")) {
			t.Fatal("a plaintext body appears in the storage topic")
		}
	}

	// Every envelope opens to the original, through each tenant's KMS with its credential.
	dir := tenant.NewDirectory(zerolog.Nop())
	dir.SetKMSOptions(registry.Options{InsecureLoopback: true})
	if err := dir.LoadFile(tenantsFile); err != nil {
		t.Fatal(err)
	}
	items := make([]decrypt.Item, len(envelopes))
	for i, sm := range envelopes {
		items[i] = decrypt.Item{MessageID: sm.MessageId, Envelope: sm.GetEnvelope()}
	}
	opener := &decrypt.Opener{Resolver: dir}
	bodies, errs := opener.Open(ctx, decrypt.Request{Actor: "e2e-test", Purpose: "verify"}, items)
	for i, sm := range envelopes {
		if errs[i] != nil {
			t.Fatalf("message %s does not open: %v", sm.MessageId, errs[i])
		}
		if string(bodies[i]) != sent[sm.MessageId] {
			t.Fatalf("message %s opened to a different body", sm.MessageId)
		}
	}

	// An envelope moved to another chat does not open (Vault refuses the scope, and the AAD too).
	moved, err := envelope.Parse(envelopes[0].GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	moved.Scope.ChatID = "chat-moved"
	_, errs = opener.Open(ctx, decrypt.Request{Actor: "e2e-test", Purpose: "verify"},
		[]decrypt.Item{{MessageID: envelopes[0].MessageId, Envelope: moved.Marshal()}})
	if errs[0] == nil || !(errors.Is(errs[0], kms.ErrInvalidCiphertext) || errors.Is(errs[0], envelope.ErrOpen)) {
		t.Fatalf("moved envelope opened or failed oddly: %v", errs[0])
	}
	t.Logf("an envelope moved to another chat fails to open: %v", errs[0])

	// Vault calls, from Vault's own audit log.
	calls := countVaultCalls(t, auditFile, keys)
	t.Logf("Vault transit calls for %d messages: encrypt %d (wrapping %d DEKs), decrypt %d (by this test's verification)",
		messages, calls["encrypt"], calls["encrypt-items"], calls["decrypt"])
	fmt.Printf("e2e: %d messages, %d stored records (%d duplicates), Vault encrypt calls %d (%.4f per message), decrypt calls %d\n",
		messages, len(records), dups, calls["encrypt"], float64(calls["encrypt"])/messages, calls["decrypt"])
	if calls["encrypt"] == 0 || calls["encrypt"] > messages/20 {
		t.Fatalf("Vault encrypt calls = %d, want between 1 and %d (far below %d messages)", calls["encrypt"], messages/20, messages)
	}

	// byok's own audit trail: one wrap event per Vault encrypt call, chains intact.
	events := readAudit(t, ctx, brokers, topics.audit)
	wraps, wrapped := 0, 0
	yandexWraps, yandexDEKs := 0, 0
	for _, ev := range events {
		if ev.Operation == "wrap" && ev.Result == "ok" && ev.Provider == "yandex" {
			yandexWraps++
			yandexDEKs += int(ev.DekCount)
			continue
		}
		if ev.Operation == "wrap" && ev.Result == "ok" {
			wraps++
			wrapped += int(ev.DekCount)
			if ev.ActorService != "encryptor" || ev.Purpose != "encrypt" || ev.Provider != "vault" || len(ev.Scopes) != int(ev.DekCount) {
				t.Fatalf("audit event %s lacks actor, purpose, provider or scopes: %v", ev.EventId, ev)
			}
		}
	}
	if wraps != calls["encrypt"] || wrapped != calls["encrypt-items"] {
		t.Fatalf("byok audit recorded %d wraps of %d DEKs; Vault's audit log saw %d encrypt calls of %d items", wraps, wrapped, calls["encrypt"], calls["encrypt-items"])
	}
	for _, r := range audit.Verify(events) {
		if r.Problem != "" {
			t.Fatalf("audit chain %s/%s broken: %s", r.TenantID, r.WorkerID, r.Problem)
		}
	}
	t.Logf("byok audit topic: %d events, %d wraps (= Vault's %d encrypt calls), every chain intact", len(events), wraps, calls["encrypt"])
	// Yandex has no batch call: one wrap event covers a batch of Encrypt calls, one per DEK.
	if got := yc.Calls("/yandex.cloud.kms.v1.SymmetricCryptoService/Encrypt"); yandexWraps == 0 || got < int64(yandexDEKs) {
		t.Fatalf("Yandex tenant: %d wrap events of %d DEKs, emulator saw %d Encrypt calls", yandexWraps, yandexDEKs, got)
	}
	t.Logf("Yandex tenant (emulator, real SDK): %d wrap events covering %d DEKs; emulator Encrypt calls %d",
		yandexWraps, yandexDEKs, yc.Calls("/yandex.cloud.kms.v1.SymmetricCryptoService/Encrypt"))

	// The security team's verify command agrees, and catches a forged event.
	verify := func() (string, error) {
		cmd := exec.Command(binary(t, "byokctl"), "audit", "verify", "-brokers", strings.Join(brokers, ","), "-audit-topic", topics.audit)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := verify(); err != nil || !strings.Contains(out, " 0 broken") {
		t.Fatalf("byokctl audit verify = %v:\n%s", err, out)
	}
	forged := proto.Clone(events[len(events)-1]).(*byokv1.AuditEvent)
	forged.EventId, forged.Seq, forged.Purpose = forged.EventId+"-forged", forged.Seq+1, "export"
	forged.Hash = audit.Hash(forged) // self-consistent, but prev_hash does not link
	fv, _ := proto.Marshal(forged)
	aw := kafkax.NewWriter(brokers, topics.audit, 1, time.Millisecond)
	if err := aw.WriteMessages(ctx, kafka.Message{Key: []byte(forged.TenantId), Value: fv}); err != nil {
		t.Fatal(err)
	}
	aw.Close()
	if out, err := verify(); err == nil || !strings.Contains(out, "BROKEN") || !strings.Contains(out, "prev_hash") {
		t.Fatalf("byokctl audit verify after a forged event = %v:\n%s; want exit 1 naming the broken link", err, out)
	} else {
		t.Logf("byokctl audit verify catches a forged event: %s", firstLine(out, "BROKEN"))
	}

	// Every audit event, the forged one included, lands in ClickHouse exactly once, and the chains
	// read back from ClickHouse verify the same way (the forgery still shows).
	store, err := chstore.Open(ctx, clickhouseAddr, chDB)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	want := uint64(len(events) + 1)
	var counts chstore.Counts
	waitFor(t, 60*time.Second, "the auditor to store every audit event in ClickHouse", func() bool {
		counts, err = store.Count(ctx, "")
		return err == nil && counts.Final >= want
	})
	if counts.Final != want || counts.Distinct != want {
		t.Fatalf("ClickHouse holds %+v, want %d events once each", counts, want)
	}
	stored, err := store.Events(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	brokenChains := 0
	for _, r := range audit.Verify(stored) {
		if r.Problem != "" {
			brokenChains++
		}
	}
	if brokenChains != 1 {
		t.Fatalf("chains read back from ClickHouse: %d broken, want exactly the forged one", brokenChains)
	}
	auditor.stop(t, 30*time.Second)
	t.Logf("ClickHouse: %d audit events stored once each (%d rows before merges); chains from ClickHouse: only the forged link broken", counts.Final, counts.Rows)

	// No canary — body, credential or DEK — in any process's log lines.
	needles := map[string][]byte{"body": []byte(bodyCanary), "vault token": []byte(tokenCanary),
		"yandex private key": []byte(privateKeyCanary)}
	for i, d := range distinctDEKs(t, ctx, dir, envelopes) {
		needles[fmt.Sprintf("DEK %d", i)] = d
		needles[fmt.Sprintf("DEK %d hex", i)] = []byte(hex.EncodeToString(d))
		needles[fmt.Sprintf("DEK %d base64", i)] = []byte(base64.StdEncoding.EncodeToString(d))
	}
	lines := 0
	for _, p := range []*proc{ingest, encA, encB, auditor} {
		out := p.out.Bytes()
		lines += bytes.Count(out, []byte("\n"))
		for what, n := range needles {
			if bytes.Contains(out, n) {
				t.Fatalf("%s leaked into %s's log", what, p.name)
			}
		}
	}
	t.Logf("scanned %d log lines of 4 processes for %d canaries: none found", lines, len(needles))
}

func vaultAdmin(t *testing.T, addr, token string) *vaultapi.Client {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func postBatch(t *testing.T, listen string, req any) {
	t.Helper()
	b, _ := json.Marshal(req)
	for attempt := 0; ; attempt++ {
		resp, err := httpClient.Post("http://"+listen+"/v1/messages:batch", "application/json", bytes.NewReader(b))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if attempt == 5 {
			t.Fatalf("POST /v1/messages:batch: %v", err)
		}
		time.Sleep(time.Second)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// written returns the last "Written" counter an encryptor logged in its stats lines.
func written(logs []byte) int64 {
	var last int64
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg    string `json:"message"`
			Worker struct {
				Written int64
			} `json:"worker"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "stats" {
			last = line.Worker.Written
		}
	}
	return last
}

// readStored consumes the storage topic until every sent message id was seen, and returns all
// records read (duplicates included).
func readStored(t *testing.T, ctx context.Context, brokers []string, topic, run string, sent map[string]string, within time.Duration) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: run + "-verify",
		StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
		CommitInterval: time.Second}) // ReadMessage would otherwise commit every record synchronously
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var out []kafka.Message
	missing := map[string]bool{}
	for id := range sent {
		missing[id] = true
	}
	for len(missing) > 0 {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("storage topic: %d of %d messages arrived before %v", len(sent)-len(missing), len(sent), err)
		}
		out = append(out, m)
		delete(missing, kafkax.Header(m, kafkax.HeaderMessageID))
	}
	// Drain what else is already there (late duplicates), briefly.
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	for {
		m, err := r.ReadMessage(dctx)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

func firstLine(s, containing string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, containing) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// readAudit reads every event on the audit topic.
func readAudit(t *testing.T, ctx context.Context, brokers []string, topic string) []*byokv1.AuditEvent {
	t.Helper()
	var out []*byokv1.AuditEvent
	for p := 0; p < 3; p++ {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		for {
			m, err := r.ReadMessage(rctx)
			if err != nil {
				break
			}
			var ev byokv1.AuditEvent
			if err := proto.Unmarshal(m.Value, &ev); err != nil {
				t.Fatalf("audit record is not an AuditEvent: %v", err)
			}
			out = append(out, &ev)
		}
		cancel()
		r.Close()
	}
	return out
}

// countVaultCalls counts transit requests to keys in a Vault file audit log.
func countVaultCalls(t *testing.T, path string, keys []string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Path string         `json:"path"`
				Data map[string]any `json:"data"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Type != "request" {
			continue
		}
		for _, k := range keys {
			for _, op := range []string{"encrypt", "decrypt"} {
				if e.Request.Path == "transit/"+op+"/"+k {
					counts[op]++
					if items, ok := e.Request.Data["batch_input"].([]any); ok {
						counts[op+"-items"] += len(items)
					}
				}
			}
		}
	}
	return counts
}

// distinctDEKs unwraps each distinct wrapped DEK once, so the log scan can look for them.
func distinctDEKs(t *testing.T, ctx context.Context, dir *tenant.Directory, stored []*byokv1.StoredMessage) [][]byte {
	t.Helper()
	seen := map[string]bool{}
	var out [][]byte
	for _, sm := range stored {
		e, err := envelope.Parse(sm.GetEnvelope())
		if err != nil || seen[string(e.Key.WrappedDEK)] {
			continue
		}
		seen[string(e.Key.WrappedDEK)] = true
		k, err := dir.KMSFor(e.Scope.TenantID)
		if err != nil {
			t.Fatal(err)
		}
		res, err := k.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: e.Key.WrappedDEK, Context: e.Scope.KMSContext()}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("unwrap for canary scan: %v %v", err, res)
		}
		out = append(out, res[0].DEK)
	}
	if len(out) == 0 {
		t.Fatal("no DEKs to scan for")
	}
	return out
}
