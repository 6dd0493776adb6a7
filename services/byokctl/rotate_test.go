package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/decrypt"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
)

// oneKMS resolves every tenant to one KMS.
type oneKMS struct{ k kms.KMS }

func (o oneKMS) KMSFor(string) (kms.KMS, error) { return o.k, nil }

type sealed struct {
	id, tenant, chat string
	body, envelope   []byte
}

func storedRec(t *testing.T, m sealed) kafka.Message {
	v, err := proto.Marshal(&byokv1.StoredMessage{SchemaVersion: 1, TenantId: m.tenant, ChatId: m.chat, MessageId: m.id,
		Payload: &byokv1.StoredMessage_Envelope{Envelope: m.envelope}})
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: kafkax.RecordKey(m.tenant, m.chat), Value: v,
		Headers: []kafka.Header{{Key: kafkax.HeaderMessageID, Value: []byte(m.id)}, {Key: kafkax.HeaderTenantID, Value: []byte(m.tenant)}}}
}

// readAll reads every record of a single-partition topic.
func readAll(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: %v (got %d of %d)", topic, err, len(out), n)
		}
		out = append(out, m)
	}
	return out
}

// TestRewrapCommand runs `byokctl rewrap` on an in-process Kafka-protocol broker with a local
// key file: a first run meets a corrupted envelope (exit 1, copied unchanged, reported), a second
// on a clean topic exits 0; the copies carry version 2 and open; every KMS call was audited.
func TestRewrapCommand(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, audit.TopicAudit, "stored-a", "stored-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	if err := local.WriteKeyFile(keys, "kek", "other-kek"); err != nil {
		t.Fatal(err)
	}
	credFile := filepath.Join(dir, "cred.json")
	cred, _ := json.Marshal(map[string]string{"key_file": keys})
	if err := os.WriteFile(credFile, cred, 0o600); err != nil {
		t.Fatal(err)
	}

	// Seal acme's messages under version 1, and one of another tenant.
	acmeKMS, otherKMS := local.New(keys, "kek"), local.New(keys, "other-kek")
	sealAll := func(k kms.KMS, tenant string, chats ...string) []sealed {
		m := dek.New(oneKMS{k}, dek.Config{})
		defer m.Close()
		var out []sealed
		for _, chat := range chats {
			key, err := m.Key(context.Background(), scope.Scope{TenantID: tenant, ChatID: chat, Day: 20426})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				s := sealed{id: fmt.Sprintf("%s-%s-%d", tenant, chat, i), tenant: tenant, chat: chat, body: []byte("body " + chat)}
				if s.envelope, err = key.Seal(s.id, s.body); err != nil {
					t.Fatal(err)
				}
				out = append(out, s)
			}
		}
		return out
	}
	acme := sealAll(acmeKMS, "acme", "general", "random")
	other := sealAll(otherKMS, "globex", "general")
	corrupt := acme[0]
	ce, _ := envelope.Parse(bytes.Clone(corrupt.envelope))
	ce.Key.WrappedDEK = bytes.Clone(ce.Key.WrappedDEK)
	ce.Key.WrappedDEK[len(ce.Key.WrappedDEK)-1] ^= 1
	corrupt.envelope, corrupt.id = ce.Marshal(), "acme-corrupt"

	write := func(topic string, ms []sealed) {
		w := kafkax.NewWriter(brokers, topic, 100, time.Millisecond)
		defer w.Close()
		var recs []kafka.Message
		for _, m := range ms {
			recs = append(recs, storedRec(t, m))
		}
		if err := w.WriteMessages(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	write("stored-a", append(append(append([]sealed(nil), acme...), other...), corrupt))
	write("stored-b", append(append([]sealed(nil), acme...), other...))

	// The customer rotates: version 2 becomes the primary.
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	if err := local.Update(keys, func(f *local.File) {
		f.Keys["kek"].Versions["2"] = base64.StdEncoding.EncodeToString(raw)
		f.Keys["kek"].Primary = "2"
	}); err != nil {
		t.Fatal(err)
	}

	call := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	base := []string{"rewrap", "-brokers", strings.Join(brokers, ","), "-tenant", "acme", "-provider", "local", "-kek-id", "kek", "-credential-file", credFile}
	if code, _, errOut := call(append(base, "-from-topic", "stored-a", "-to-topic", "x")...); code != 2 || !strings.Contains(errOut, "-method") {
		t.Fatalf("rewrap without -method = %d %s, want 2 naming -method", code, errOut)
	}
	if code, _, _ := call(append(base, "-from-topic", "stored-a", "-to-topic", "x", "-method", "decrypt")...); code != 2 {
		t.Fatalf("rewrap -method decrypt = %d, want 2", code)
	}

	code, out, errOut := call(append(base, "-from-topic", "stored-a", "-to-topic", "rewrapped-a", "-method", "rewrap")...)
	if code != 1 || !strings.Contains(out, "read 7, written 7; source end offsets 0=7") || !strings.Contains(out, "rewrapped 4 to KEK version 2") ||
		!strings.Contains(out, "2 of other tenants or without an envelope, 1 that failed") || !strings.Contains(out, "invalid ciphertext") || !strings.Contains(out, "FAILED") {
		t.Fatalf("rewrap with a corrupted envelope = %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = call(append(base, "-from-topic", "stored-b", "-to-topic", "rewrapped-b", "-method", "rewrap")...)
	if code != 0 || !strings.Contains(out, "rewrapped 4 to KEK version 2") || !strings.Contains(out, "ok:") {
		t.Fatalf("rewrap = %d\n%s%s", code, out, errOut)
	}

	// The copies carry version 2 and open with the tenant's key; other tenants' are untouched.
	var items []decrypt.Item
	for _, m := range readAll(t, brokers, "rewrapped-b", 6) {
		var sm byokv1.StoredMessage
		if err := proto.Unmarshal(m.Value, &sm); err != nil {
			t.Fatal(err)
		}
		e, err := envelope.Parse(sm.GetEnvelope())
		if err != nil {
			t.Fatal(err)
		}
		if sm.TenantId == "acme" {
			if e.Key.KEKVersion != "2" {
				t.Fatalf("acme record %s at KEK version %q, want 2", sm.MessageId, e.Key.KEKVersion)
			}
			items = append(items, decrypt.Item{MessageID: sm.MessageId, Envelope: sm.GetEnvelope()})
		} else if e.Key.KEKVersion != "1" {
			t.Fatalf("globex record %s changed KEK version to %q", sm.MessageId, e.Key.KEKVersion)
		}
	}
	// Retire version 1 (drop it from the key file): the copies still open.
	if err := local.Update(keys, func(f *local.File) { delete(f.Keys["kek"].Versions, "1") }); err != nil {
		t.Fatal(err)
	}
	o := &decrypt.Opener{Resolver: oneKMS{acmeKMS}}
	bodies, errs := o.Open(context.Background(), decrypt.Request{Actor: "test", Purpose: "verify"}, items)
	for i := range items {
		if errs[i] != nil || !bytes.HasPrefix(bodies[i], []byte("body ")) {
			t.Fatalf("open(rewrapped %s) err = %v", items[i].MessageID, errs[i])
		}
	}

	// Every KMS call of both runs is on the audit topic, as byokctl's, purpose rewrap, chained.
	events, err := audit.ReadTopic(context.Background(), brokers, audit.TopicAudit)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, e := range events {
		if e.TenantId != "acme" || e.ActorService != "byokctl" || e.Purpose != "rewrap" {
			t.Fatalf("audit event %v, want tenant acme, actor byokctl, purpose rewrap", e)
		}
		ops[e.Operation]++
	}
	if ops[audit.OpDescribe] != 2 || ops[audit.OpRewrap] != 2 || len(ops) != 2 {
		t.Fatalf("audit operations %v, want 2 describe and 2 rewrap (one per run)", ops)
	}
	if code, out, _ := call("audit", "verify", "-brokers", strings.Join(brokers, ",")); code != 0 || !strings.Contains(out, "0 broken") {
		t.Fatalf("audit verify = %d %s", code, out)
	}
}

func TestKeyCommandsNeedTheirFlags(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for _, args := range [][]string{
		{"key", "rotate"},
		{"key", "rotate", "-vault-addr", "http://127.0.0.1:1", "-key", "k"},
		{"key", "rotate", "-vault-addr", "http://127.0.0.1:1", "-key", "k", "-vault-token-file", filepath.Join(dir, "missing")},
		{"key", "rotate", "-vault-addr", "http://127.0.0.1:1", "-key", "k", "-vault-token-file", empty},
		{"key", "retire", "-vault-addr", "http://127.0.0.1:1", "-key", "k", "-vault-token-file", empty},
		{"rewrap", "-tenant", "acme"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%v = %d (%s), want 2", args, code, errOut.String())
		}
	}
}

// TestKeyRotateRetireVault runs `key rotate` and `key retire` against a real Vault with a token
// holding only the key-management policy docs/rotation.md gives the security team.
func TestKeyRotateRetireVault(t *testing.T) {
	addr := os.Getenv("BYOK_TEST_VAULT_ADDR")
	if addr == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("BYOK_TEST_VAULT_ADDR is required (BYOK_REQUIRE_INTEGRATION=1)")
		}
		t.Skip("BYOK_TEST_VAULT_ADDR not set: start Vault with scripts/vault.sh")
	}
	rootToken := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if rootToken == "" {
		rootToken = "root"
	}
	root, err := vaultapi.NewClient(&vaultapi.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(rootToken)
	key := fmt.Sprintf("byokctl-rotate-%d", time.Now().UnixNano())
	if _, err := root.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`
path "transit/keys/%[1]s"        { capabilities = ["read"] }
path "transit/keys/%[1]s/rotate" { capabilities = ["update"] }
path "transit/keys/%[1]s/config" { capabilities = ["update"] }
path "transit/keys/%[1]s/trim"   { capabilities = ["update"] }`, key)
	if err := root.Sys().PutPolicy("sec-team-"+key, policy); err != nil {
		t.Fatal(err)
	}
	canary := "byokctl-canary-" + key
	if _, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{ID: canary, Policies: []string{"sec-team-" + key}, NoDefaultPolicy: true}); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	call := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(args, "-vault-addr", addr, "-vault-token-file", tokenFile), &out, &errOut)
		s := out.String() + errOut.String()
		if strings.Contains(s, canary) {
			t.Fatalf("byokctl %v printed the token:\n%s", args, s)
		}
		return code, s
	}
	if code, out := call("key", "rotate", "-key", key); code != 0 || !strings.Contains(out, "latest_version=2 min_decryption_version=1") {
		t.Fatalf("key rotate = %d %s", code, out)
	}
	if code, out := call("key", "rotate", "-key", key); code != 0 || !strings.Contains(out, "latest_version=3") {
		t.Fatalf("second key rotate = %d %s", code, out)
	}
	if code, out := call("key", "retire", "-key", key, "-min-decryption-version", "9"); code != 1 || !strings.Contains(out, "request rejected") {
		t.Fatalf("key retire beyond the latest version = %d %s, want 1 and Vault's refusal", code, out)
	}
	if code, out := call("key", "retire", "-key", key, "-min-decryption-version", "2"); code != 0 || !strings.Contains(out, "min_decryption_version=2 ") || !strings.Contains(out, "reversible") {
		t.Fatalf("key retire = %d %s", code, out)
	}
	if code, out := call("key", "retire", "-key", key, "-min-decryption-version", "3", "-trim"); code != 0 || !strings.Contains(out, "min_decryption_version=3 min_encryption_version=3 min_available_version=3") {
		t.Fatalf("key retire -trim = %d %s", code, out)
	}
	if code, out := call("key", "rotate", "-key", "not-this-teams-key"); code != 1 || !strings.Contains(out, "access denied") {
		t.Fatalf("key rotate of another key = %d %s, want 1 and access denied", code, out)
	}
}
