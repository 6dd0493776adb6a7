package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/pkg/tenant"
)

func vaultAddr(t *testing.T) string {
	v := os.Getenv("BYOK_TEST_VAULT_ADDR")
	if v == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("BYOK_TEST_VAULT_ADDR is required (BYOK_REQUIRE_INTEGRATION=1)")
		}
		t.Skip("BYOK_TEST_VAULT_ADDR not set: start Vault with scripts/vault.sh")
	}
	return v
}

// TestKMSRevocationWithVault: envelopes sealed through a real Vault (derived transit key, a token
// limited to it) read through the reader over HTTP, with audit events on a Kafka-protocol topic
// (kfake). Then the key owner revokes the token: reads go on only while the DEKs are cached and
// within the TTL, then fail with "access revoked by the key owner".
func TestKMSRevocationWithVault(t *testing.T) {
	addr := vaultAddr(t)
	root := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if root == "" {
		root = "root"
	}
	const ttl = 2 * time.Second
	run := fmt.Sprintf("reader-%d", time.Now().UnixNano())
	admin, err := vaultapi.NewClient(&vaultapi.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(root)
	key := run + "-acme"
	if _, err := admin.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf("path \"transit/encrypt/%[1]s\" { capabilities = [\"update\"] }\npath \"transit/decrypt/%[1]s\" { capabilities = [\"update\"] }\npath \"transit/keys/%[1]s\" { capabilities = [\"read\"] }\n", key)
	if err := admin.Sys().PutPolicy(run, policy); err != nil {
		t.Fatal(err)
	}
	secret, err := admin.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{run}, NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	token := secret.Auth.ClientToken
	cred, _ := json.Marshal(map[string]string{"address": addr, "token": token})

	dir := tenant.NewDirectory(zerolog.Nop())
	dir.Apply(tenant.File{Tenants: map[string]tenant.Config{"acme": {Enabled: true, Provider: "vault", KEKID: key, Credential: cred}}})
	if _, err := registry.Open("vault", key, cred); err != nil {
		t.Fatal(err)
	}

	// Audit on a Kafka-protocol topic.
	const topic = "byok.audit"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	sink := audit.NewKafkaSink(cluster.ListenAddrs(), topic)
	defer sink.Close()
	al := audit.NewLog(sink, "reader-vault-test")
	resolver := &audit.Resolver{Inner: dir, Log: al}

	// Seal through Vault (the encrypt path's DEK manager, audited the same way).
	m := dek.New(resolver, dek.Config{})
	defer m.Close()
	var items []DecryptItem
	bodies := map[string]string{}
	for i := range 20 {
		k, err := m.Key(context.Background(), scope.Scope{TenantID: "acme", ChatID: fmt.Sprintf("chat-%d", i%4), Day: scope.DayOf(time.Now())})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%s-m%d", run, i)
		bodies[id] = fmt.Sprintf("body %d of %s", i, run)
		env, err := k.Seal(id, []byte(bodies[id]))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, DecryptItem{MessageID: id, EnvelopeBase64: base64.StdEncoding.EncodeToString(env)})
	}

	cache, err := deccache.New(deccache.Config{MaxTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	reader := &Reader{Resolver: resolver, Log: al, Cache: cache}
	set, _ := callers.Parse([]byte(fmt.Sprintf(`{"callers": {"render-svc": {"token_sha256": %q, "tenants": ["acme"]}}}`, callers.TokenSHA256("caller-token"))))
	srv := httptest.NewServer(NewHandler(reader, set, zerolog.Nop()))
	defer srv.Close()
	f := &fixture{srv: srv, bodies: bodies}
	read := func() DecryptResponse {
		status, b := f.post(t, "caller-token", DecryptRequest{Actor: "render-svc", OnBehalfOf: "user-1", Purpose: "render", Items: items})
		if status != 200 {
			t.Fatalf("POST /v1/decrypt = %d %s", status, b)
		}
		var resp DecryptResponse
		json.Unmarshal(b, &resp)
		return resp
	}
	f.checkOK(t, read())

	// The key owner revokes byok's token.
	if err := admin.Auth().Token().RevokeOrphan(token); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	var lastOK time.Time
	for {
		resp := read()
		now := time.Now()
		okAll, revokedAll := true, true
		for _, r := range resp.Results {
			okAll = okAll && r.Error == ""
			revokedAll = revokedAll && r.Error == ReasonRevoked
		}
		switch {
		case okAll:
			lastOK = now
		case revokedAll:
			gap := time.Duration(0)
			if !lastOK.IsZero() {
				gap = lastOK.Sub(revokedAt)
			}
			t.Logf("time from KMS revoke to last successful read: %s (TTL %s); first revoked answer after %s", gap, ttl, now.Sub(revokedAt))
			if gap > ttl {
				t.Fatalf("a read succeeded %s after the revocation, beyond the TTL %s", gap, ttl)
			}
			goto audited
		default:
			t.Fatalf("mixed results after revocation: %+v", resp.Results)
		}
		if now.Sub(revokedAt) > ttl+5*time.Second {
			t.Fatalf("reads still succeed %s after the revocation (TTL %s)", now.Sub(revokedAt), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
audited:
	// The audit topic holds the reads: the unwrap (ok), cached reads, and the denied unwrap.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cluster.ListenAddrs(), Topic: topic, GroupID: run, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	seen := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for seen["unwrap/ok"] < 1 || seen[OpReadCached+"/ok"] < 1 || seen["unwrap/denied"] < 1 {
		msg, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("audit topic: %v (seen %v)", err, seen)
		}
		ev := &byokv1.AuditEvent{}
		if err := proto.Unmarshal(msg.Value, ev); err != nil {
			t.Fatal(err)
		}
		if ev.Operation != audit.OpWrap && (ev.ActorService != "render-svc" || ev.ActorUser != "user-1" || ev.Purpose != "render") {
			t.Fatalf("read event %s with actor %s/%s purpose %s, want render-svc/user-1 render", ev.Operation, ev.ActorService, ev.ActorUser, ev.Purpose)
		}
		seen[ev.Operation+"/"+ev.Result]++
	}
	t.Logf("audit events: %v", seen)
}
