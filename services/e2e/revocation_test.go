package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/reader/api"
)

// readerClient posts decrypt requests to one reader process.
type readerClient struct {
	name, listen, token string
}

func (c readerClient) decrypt(items []api.DecryptItem) ([]api.DecryptResult, error) {
	b, _ := json.Marshal(api.DecryptRequest{Actor: "render-svc", OnBehalfOf: "user-7", Purpose: "render", Items: items})
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.listen+"/v1/decrypt", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", c.name, resp.StatusCode)
	}
	var out api.DecryptResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// firstDenied polls every reader with item until each answers with reason, and returns how long
// after since each first did.
func firstDenied(t *testing.T, readers []readerClient, item api.DecryptItem, reason string, since time.Time, start chan struct{}) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(readers))
	var wg sync.WaitGroup
	for i, rc := range readers {
		wg.Go(func() {
			<-start
			deadline := since.Add(10 * time.Second)
			for time.Now().Before(deadline) {
				res, err := rc.decrypt([]api.DecryptItem{item})
				if err == nil && res[0].Error == reason {
					out[i] = time.Since(since)
					return
				}
			}
			out[i] = -1
		})
	}
	wg.Wait()
	for i, d := range out {
		if d < 0 {
			t.Fatalf("%s never answered %q", readers[i].name, reason)
		}
	}
	return out
}

// TestRevocationAcrossReaders runs two reader processes on real Kafka and Vault and measures what
// the customer is promised: a granular revocation (one chat, then a date range) refuses reads on
// every reader within a second, even of DEKs they hold in cache, and is audited as denied;
// un-revoking restores access; and after a KMS-level revocation (the Vault token revoked) nothing
// is served beyond the DEK cache TTL.
func TestRevocationAcrossReaders(t *testing.T) {
	brokers := strings.Split(env(t, "BYOK_TEST_KAFKA_BROKERS"), ",")
	vaultAddr := env(t, "BYOK_TEST_VAULT_ADDR")
	rootToken := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if rootToken == "" {
		rootToken = "root"
	}
	const (
		chats    = 8
		rounds   = 5
		dekTTL   = 2 * time.Second
		tokenCRC = "e2e-reader-caller-token"
	)
	run := fmt.Sprintf("e2e-rev-%d", time.Now().UnixNano())
	tenantID := "acme-" + run
	topics := control.Topics{Settings: run + ".settings", Revocations: run + ".revocations"}
	auditTopic := run + ".audit"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := kafkax.EnsureTopics(ctx, brokers, kafkax.TopicSpec{Name: auditTopic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	store, err := control.OpenStore(ctx, brokers, topics, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	// Vault: a derived key and a token that may only encrypt, decrypt and read it.
	admin := vaultAdmin(t, vaultAddr, rootToken)
	key, token := run, "rev-token-"+strings.ReplaceAll(run, "-", "")
	derivedKeysAndToken(t, admin, run, token, key)
	cred, _ := json.Marshal(map[string]string{"address": vaultAddr, "token": token})
	tf := tenant.File{Tenants: map[string]tenant.Config{tenantID: {Enabled: true, Provider: "vault", KEKID: key, Credential: cred}}}
	dir := t.TempDir()
	tenantsFile := filepath.Join(dir, "tenants.json")
	callersFile := filepath.Join(dir, "callers.json")
	b, _ := json.Marshal(tf)
	os.WriteFile(tenantsFile, b, 0o600)
	os.WriteFile(callersFile, []byte(fmt.Sprintf(`{"callers": {"render-svc": {"token_sha256": %q, "tenants": [%q]}}}`, callers.TokenSHA256(tokenCRC), tenantID)), 0o600)

	// Envelopes of today, one per chat, sealed through Vault as the encryptor would.
	tdir := tenant.NewDirectory(zerolog.Nop())
	tdir.Apply(tf)
	sink := audit.NewKafkaSink(brokers, auditTopic)
	defer sink.Close()
	deks := dek.New(&audit.Resolver{Inner: tdir, Log: audit.NewLog(sink, "e2e-sealer"), Fallback: audit.Access{ActorService: "encryptor", Purpose: "encrypt"}}, dek.Config{})
	defer deks.Close()
	today := scope.DayOf(time.Now())
	items := make([]api.DecryptItem, chats)
	for c := range chats {
		k, err := deks.Key(ctx, scope.Scope{TenantID: tenantID, ChatID: fmt.Sprintf("chat-%d", c), Day: today})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%s-m%d", run, c)
		env, err := k.Seal(id, []byte("CANARY-BODY-revocation "+id))
		if err != nil {
			t.Fatal(err)
		}
		items[c] = api.DecryptItem{MessageID: id, EnvelopeBase64: base64.StdEncoding.EncodeToString(env)}
	}

	readerBin := binary(t, "reader")
	var readers []readerClient
	for i := range 2 {
		name := fmt.Sprintf("reader-%d", i+1)
		listen := freePort(t)
		start(t, name, readerBin, "BYOK_KAFKA_BROKERS="+strings.Join(brokers, ","), "BYOK_READER_LISTEN="+listen,
			"BYOK_AUDIT_TOPIC="+auditTopic, "BYOK_TENANTS_FILE="+tenantsFile, "BYOK_READER_CALLERS_FILE="+callersFile,
			"BYOK_READER_DEK_TTL="+dekTTL.String(), "BYOK_METRICS_LISTEN=127.0.0.1:0", "BYOK_WORKER_ID="+name,
			"BYOK_SETTINGS_TOPIC="+topics.Settings, "BYOK_REVOCATIONS_TOPIC="+topics.Revocations)
		readers = append(readers, readerClient{name: name, listen: listen, token: tokenCRC})
	}
	allOK := func(rc readerClient) bool {
		res, err := rc.decrypt(items)
		if err != nil {
			return false
		}
		for _, r := range res {
			if r.Error != "" {
				return false
			}
		}
		return true
	}
	for _, rc := range readers {
		waitFor(t, 60*time.Second, rc.name+" serving", func() bool { return allOK(rc) })
	}

	// Granular: revoke one chat per round while both readers poll it from their warm caches.
	var worst []time.Duration
	for round := range rounds {
		item := items[round]
		for _, rc := range readers {
			if !allOK(rc) {
				t.Fatalf("round %d: %s does not serve every chat before the revocation", round, rc.name)
			}
		}
		go_ := make(chan struct{})
		rv := &byokv1.Revocation{SchemaVersion: control.SchemaVersion, RevocationId: fmt.Sprintf("r%d", round), TenantId: tenantID,
			ChatId: fmt.Sprintf("chat-%d", round), Reason: "e2e", CreatedAt: timestamppb.Now(), CreatedBy: "security-team"}
		since := time.Now()
		resc := make(chan []time.Duration, 1)
		go func() { resc <- firstDenied(t, readers, item, api.ReasonScopeRevoked, since, go_) }()
		close(go_)
		if err := store.Revoke(ctx, rv); err != nil {
			t.Fatal(err)
		}
		lat := <-resc
		worst = append(worst, slices.Max(lat))
		t.Logf("round %d: revoke chat-%d → first denied read: %s %s, %s %s", round, round, readers[0].name, lat[0], readers[1].name, lat[1])
		// Other chats are unaffected; un-revoking restores the chat on both readers.
		other := items[(round+1)%chats]
		for _, rc := range readers {
			if res, err := rc.decrypt([]api.DecryptItem{other}); err != nil || res[0].Error != "" {
				t.Fatalf("%s: an unrevoked chat fails: %v %v", rc.name, res, err)
			}
		}
		if err := store.Unrevoke(ctx, tenantID, rv.RevocationId); err != nil {
			t.Fatal(err)
		}
		for _, rc := range readers {
			waitFor(t, 10*time.Second, rc.name+" serving again after un-revoke", func() bool { return allOK(rc) })
		}
	}
	slices.Sort(worst)
	t.Logf("granular revoke → first denied read on both readers, %d rounds: median %s, max %s (target ≤ 1s)", rounds, worst[len(worst)/2], worst[len(worst)-1])

	// A date range (today, every chat) refuses every item on both readers.
	rv := &byokv1.Revocation{SchemaVersion: control.SchemaVersion, RevocationId: "range", TenantId: tenantID,
		FromDay: today.String(), ToDay: today.String(), CreatedAt: timestamppb.Now()}
	if err := store.Revoke(ctx, rv); err != nil {
		t.Fatal(err)
	}
	for _, rc := range readers {
		waitFor(t, 10*time.Second, rc.name+" refusing the date range", func() bool {
			res, err := rc.decrypt(items)
			if err != nil {
				return false
			}
			for _, r := range res {
				if r.Error != api.ReasonScopeRevoked {
					return false
				}
			}
			return true
		})
	}
	if err := store.Unrevoke(ctx, tenantID, "range"); err != nil {
		t.Fatal(err)
	}
	for _, rc := range readers {
		waitFor(t, 10*time.Second, rc.name+" serving again", func() bool { return allOK(rc) })
	}

	// The refusals are on the audit topic as denied, scope_revoked, with actor and purpose.
	denied := map[string]int{}
	for _, ev := range readAudit(t, ctx, brokers, auditTopic) {
		if ev.Result == audit.ResultDenied && ev.ErrorCode == audit.CodeScopeRevoked {
			if ev.ActorService != "render-svc" || ev.Purpose != "render" || ev.TenantId != tenantID {
				t.Fatalf("denied event has actor %s purpose %s tenant %s", ev.ActorService, ev.Purpose, ev.TenantId)
			}
			denied[ev.WorkerId]++
		}
	}
	for _, rc := range readers {
		if denied[rc.name] == 0 {
			t.Fatalf("no scope_revoked audit event from %s (by worker: %v)", rc.name, denied)
		}
	}

	// KMS-level: the customer revokes byok's Vault token. Both readers serve from cache at most
	// until the TTL of DEKs unwrapped before, then fail with the key owner's revocation.
	for _, rc := range readers {
		if !allOK(rc) {
			t.Fatalf("%s does not serve before the KMS-level revocation", rc.name)
		}
	}
	revokedAt := time.Now()
	if err := admin.Auth().Token().RevokeOrphan(token); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lastOK time.Duration
	var wg sync.WaitGroup
	for _, rc := range readers {
		wg.Go(func() {
			for time.Since(revokedAt) < dekTTL+3*time.Second {
				sent := time.Since(revokedAt) // the cache decided after this: a safe lower bound
				res, err := rc.decrypt(items[:1])
				if err != nil {
					continue
				}
				if res[0].Error == "" {
					mu.Lock()
					lastOK = max(lastOK, sent)
					mu.Unlock()
				} else if res[0].Error != api.ReasonRevoked {
					t.Errorf("%s after the KMS-level revocation: %q, want %q", rc.name, res[0].Error, api.ReasonRevoked)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("KMS-level revoke → last successful read (sent at): %s (DEK cache TTL %s)", lastOK, dekTTL)
	if lastOK > dekTTL {
		t.Fatalf("a read succeeded %s after the KMS-level revocation, beyond the TTL %s", lastOK, dekTTL)
	}
}
