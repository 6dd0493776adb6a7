// Package demo wires the whole encrypt path in one process for a guided run: ingest API,
// two encryptor workers in one consumer group, the load generator, and a verifying reader.
package demo

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/decrypt"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/flagenv"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/producer"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/encryptor/worker"
	"github.com/byok-io/byok/services/ingest/api"
	"github.com/byok-io/byok/services/loadgen/gen"
	readerapi "github.com/byok-io/byok/services/reader/api"
)

// Config is the demo's settings.
type Config struct {
	Brokers    []string // empty: in-process broker
	VaultAddr  string   // empty: local key file
	VaultToken string
	Messages   int
	Tenants    int
	Chats      int
	BodySize   int
}

// ParseFlags reads the settings.
func ParseFlags(args []string) (Config, error) {
	var c Config
	fs := flagenv.New("demo")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "", "Kafka brokers (empty: an in-process broker)")
	vault := fs.String("vault-addr", "BYOK_DEMO_VAULT_ADDR", "", "Vault address with transit mounted (empty: a local key file)")
	token := fs.String("vault-token", "BYOK_DEMO_VAULT_TOKEN", "root", "Vault token that may create transit keys")
	fs.IntVar(&c.Messages, "messages", 3000, "messages to send")
	fs.IntVar(&c.Tenants, "tenants", 3, "tenants")
	fs.IntVar(&c.Chats, "chats", 30, "chats over all tenants")
	fs.IntVar(&c.BodySize, "body-size", 200, "body size in bytes")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Brokers, c.VaultAddr, c.VaultToken = *brokers, *vault, *token
	if c.Messages < 1 || c.Tenants < 1 || c.Chats < c.Tenants {
		return c, fmt.Errorf("-messages must be ≥1, -tenants ≥1, -chats ≥ -tenants")
	}
	return c, nil
}

// countingResolver counts KMS wrap calls.
type countingResolver struct {
	dek.Resolver
	calls, items atomic.Int64
}

type countingKMS struct {
	kms.KMS
	r *countingResolver
}

func (c countingKMS) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	c.r.calls.Add(1)
	c.r.items.Add(int64(len(reqs)))
	return c.KMS.Wrap(ctx, reqs)
}

func (r *countingResolver) KMSFor(t string) (kms.KMS, error) {
	k, err := r.Resolver.KMSFor(t)
	if err != nil {
		return nil, err
	}
	return countingKMS{KMS: k, r: r}, nil
}

// recordingSink remembers what was sent, so the demo can compare what comes back.
type recordingSink struct {
	gen.Sink
	mu   sync.Mutex
	sent map[string]*byokv1.MessageEvent
}

func (s *recordingSink) Send(ctx context.Context, events []*byokv1.MessageEvent) error {
	err := s.Sink.Send(ctx, events)
	if err == nil {
		s.mu.Lock()
		for _, e := range events {
			s.sent[e.MessageId] = e
		}
		s.mu.Unlock()
	}
	return err
}

// Run runs the demo and prints to out.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	log := zerolog.New(io.Discard)
	brokers, brokerDesc := cfg.Brokers, "real Kafka at "+fmt.Sprint(cfg.Brokers)
	if len(brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
		if err != nil {
			return err
		}
		defer c.Close()
		brokers, brokerDesc = c.ListenAddrs(), "in-process Kafka-protocol broker (pass -brokers for a real one)"
	}
	run := fmt.Sprintf("demo-%d", time.Now().Unix())
	topics := struct{ in, stored, dead, audit string }{run + ".plaintext", run + ".stored", run + ".deadletter", run + ".audit"}
	if err := kafkax.EnsureTopics(ctx, brokers,
		kafkax.TopicSpec{Name: topics.in, Partitions: 6}, kafkax.TopicSpec{Name: topics.stored, Partitions: 6},
		kafkax.TopicSpec{Name: topics.dead, Partitions: 1}, kafkax.TopicSpec{Name: topics.audit, Partitions: 3}); err != nil {
		return err
	}
	dir, kmsDesc, cleanup, err := setupTenants(ctx, cfg, run)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(out, "byok demo: %d messages, %d tenants, %d chats\n  broker: %s\n  KMS:    %s\n\n", cfg.Messages, cfg.Tenants, cfg.Chats, brokerDesc, kmsDesc)

	// Ingest API on a loopback port.
	pub, err := producer.New(brokers, producer.WithTopic(topics.in))
	if err != nil {
		return err
	}
	defer pub.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	go func() { _ = api.Serve(sctx, ln, api.NewHandler(pub, log), log) }()

	// Two encryptor workers in one consumer group, sharing one DEK manager's view of the KMSs
	// as two processes would not: each gets its own manager, as in production.
	// Every KMS call is audited (as in the encryptor service) and counted.
	auditSink := audit.NewKafkaSink(brokers, topics.audit)
	defer auditSink.Close()
	counter := &countingResolver{Resolver: dir}
	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var workers []*worker.Worker
	var managers []*dek.Manager
	for i := 1; i <= 2; i++ {
		audited := &audit.Resolver{Inner: counter, Log: audit.NewLog(auditSink, fmt.Sprintf("encryptor-%d", i)),
			Fallback: audit.Access{ActorService: "encryptor", Purpose: "encrypt"}}
		m := dek.New(audited, dek.Config{})
		managers = append(managers, m)
		w, err := worker.New(worker.Config{
			Brokers: brokers, InputTopic: topics.in, StorageTopic: topics.stored, DeadLetterTopic: topics.dead,
			GroupID: run, WorkerID: fmt.Sprintf("encryptor-%d", i), SessionTimeout: 6 * time.Second,
		}, dir, m, log)
		if err != nil {
			stopWorkers()
			return err
		}
		workers = append(workers, w)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(wctx) }()
	}
	defer func() {
		stopWorkers()
		wg.Wait()
		for _, m := range managers {
			m.Close()
		}
	}()

	// Send through the ingest API.
	httpSink, err := gen.NewHTTPSink("http://"+ln.Addr().String(), &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	sink := &recordingSink{Sink: httpSink, sent: map[string]*byokv1.MessageEvent{}}
	gcfg := gen.DefaultConfig()
	gcfg.Messages, gcfg.Tenants, gcfg.Chats, gcfg.BodySize = cfg.Messages, cfg.Tenants, cfg.Chats, cfg.BodySize
	fmt.Fprintf(out, "1. POST /v1/messages:batch → %s\n", topics.in)
	res, err := gen.Run(ctx, gcfg, sink, io.Discard)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %s\n", res)
	if err := showPlaintext(ctx, out, brokers, topics.in); err != nil {
		return err
	}

	// Read the storage topic until every message is there.
	fmt.Fprintf(out, "\n2. two encryptors → %s\n", topics.stored)
	stored, err := readAll(ctx, brokers, topics.stored, run, sink.sent)
	if err != nil {
		return err
	}
	var sm byokv1.StoredMessage
	if err := proto.Unmarshal(stored[0].Value, &sm); err != nil {
		return err
	}
	env, err := envelope.Parse(sm.GetEnvelope())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   ciphertext out: message %s, key %q\n", sm.MessageId, stored[0].Key)
	fmt.Fprintf(out, "     envelope v%d, AES-256-GCM, %d bytes for a %d-byte body (%d bytes of overhead)\n",
		env.Version, len(sm.GetEnvelope()), len(sink.sent[sm.MessageId].Body), len(sm.GetEnvelope())-len(sink.sent[sm.MessageId].Body))
	fmt.Fprintf(out, "     key: provider %s, KEK %s version %s, scope %s\n", env.Key.Provider, env.Key.KEKID, env.Key.KEKVersion, env.Scope)
	fmt.Fprintf(out, "     wrapped DEK (%d bytes): %s\n", len(env.Key.WrappedDEK), printable(env.Key.WrappedDEK, 72))
	fmt.Fprintf(out, "     bytes: %s…\n", hex.EncodeToString(sm.GetEnvelope()[:min(48, len(sm.GetEnvelope()))]))

	// Open everything again through the KMS, as the read path will.
	fmt.Fprintf(out, "\n3. read back through the tenant's KMS (actor demo, purpose verify)\n")
	items := make([]decrypt.Item, len(stored))
	ids := make([]string, len(stored))
	for i, m := range stored {
		var s byokv1.StoredMessage
		if err := proto.Unmarshal(m.Value, &s); err != nil {
			return err
		}
		items[i], ids[i] = decrypt.Item{MessageID: s.MessageId, Envelope: s.GetEnvelope()}, s.MessageId
	}
	opener := &decrypt.Opener{Resolver: &audit.Resolver{Inner: dir, Log: audit.NewLog(auditSink, "demo-reader")}}
	bodies, errs := opener.Open(ctx, decrypt.Request{Actor: "demo", Purpose: "verify"}, items)
	ok := 0
	for i := range items {
		if errs[i] == nil && string(bodies[i]) == string(sink.sent[ids[i]].Body) {
			ok++
		}
	}
	fmt.Fprintf(out, "   %d of %d envelopes opened to their original bodies; e.g. %s → %q\n", ok, len(items), ids[0], trunc(string(bodies[0]), 60))
	moved, _ := envelope.Parse(items[0].Envelope)
	moved.Scope.ChatID += "-elsewhere"
	_, merr := opener.Open(ctx, decrypt.Request{Actor: "demo", Purpose: "verify"}, []decrypt.Item{{MessageID: ids[0], Envelope: moved.Marshal()}})
	fmt.Fprintf(out, "   the same envelope moved to another chat: %v\n", merr[0])

	if err := revocationStep(ctx, out, brokers, run, dir, auditSink, stored[0]); err != nil {
		return err
	}

	var encrypted, written int64
	for _, w := range workers {
		encrypted += w.Stats().Encrypted
		written += w.Stats().Written
	}
	var scopes int
	for _, m := range managers {
		scopes += int(m.Stats().WrappedDEKs)
	}
	fmt.Fprintf(out, "\nsummary\n")
	fmt.Fprintf(out, "  messages sent           %d\n", len(sink.sent))
	fmt.Fprintf(out, "  envelopes stored        %d (encrypted by worker 1+2: %d)\n", len(stored), encrypted)
	fmt.Fprintf(out, "  opened and matched      %d\n", ok)
	fmt.Fprintf(out, "  KMS wrap calls          %d (wrapping %d DEKs: one per scope seen by each worker)\n", counter.calls.Load(), counter.items.Load())
	fmt.Fprintf(out, "  KMS calls per message   %.4f\n", float64(counter.calls.Load())/float64(len(sink.sent)))
	events, err := audit.ReadTopic(ctx, brokers, topics.audit)
	if err != nil {
		return err
	}
	ops := map[string]int{}
	for _, ev := range events {
		ops[ev.Operation+"/"+ev.Purpose]++
	}
	broken := 0
	reports := audit.Verify(events)
	for _, r := range reports {
		if r.Problem != "" {
			broken++
		}
	}
	fmt.Fprintf(out, "  audit events            %d on %s (%v), %d hash chains, %d broken\n", len(events), topics.audit, ops, len(reports), broken)
	if ok != len(items) || len(stored) < len(sink.sent) {
		return fmt.Errorf("%d of %d envelopes did not open to their originals", len(items)-ok, len(items))
	}
	return nil
}

// printable shows b as text if it is printable ASCII (Vault's "vault:v1:…"), else as hex.
func printable(b []byte, n int) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return trunc(hex.EncodeToString(b), n)
		}
	}
	return trunc(string(b), n)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func showPlaintext(ctx context.Context, out io.Writer, brokers []string, topic string) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := r.ReadMessage(rctx)
	if err != nil {
		return err
	}
	var ev byokv1.MessageEvent
	if err := proto.Unmarshal(m.Value, &ev); err != nil {
		return err
	}
	fmt.Fprintf(out, "   plaintext in:  message %s, key %q, body %q\n", ev.MessageId, m.Key, trunc(string(ev.Body), 60))
	return nil
}

func readAll(ctx context.Context, brokers []string, topic, group string, sent map[string]*byokv1.MessageEvent) ([]kafka.Message, error) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: group + "-reader",
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, SessionTimeout: 6 * time.Second,
		CommitInterval: time.Second}) // not one synchronous commit per record
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	missing := make(map[string]bool, len(sent))
	for id := range sent {
		missing[id] = true
	}
	var out []kafka.Message
	for len(missing) > 0 {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			return nil, fmt.Errorf("storage topic: %d messages missing: %w", len(missing), err)
		}
		out = append(out, m)
		delete(missing, kafkax.Header(m, kafkax.HeaderMessageID))
	}
	return out, nil
}

// setupTenants gives each tenant a KEK: a transit key in Vault, or a key in a local key file.
func setupTenants(ctx context.Context, cfg Config, run string) (*tenant.Directory, string, func(), error) {
	tmp, err := os.MkdirTemp("", "byok-demo-")
	if err != nil {
		return nil, "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	f := tenant.File{Tenants: map[string]tenant.Config{}}
	var desc string
	if cfg.VaultAddr == "" {
		keyFile := filepath.Join(tmp, "keys.json")
		var ids []string
		for t := 1; t <= cfg.Tenants; t++ {
			ids = append(ids, gen.TenantOf(t, cfg.Tenants))
		}
		if err := local.WriteKeyFile(keyFile, ids...); err != nil {
			return nil, "", cleanup, err
		}
		cred, _ := json.Marshal(map[string]string{"key_file": keyFile})
		for _, id := range ids {
			f.Tenants[id] = tenant.Config{Enabled: true, Provider: "local", KEKID: id, Credential: cred}
		}
		desc = "local key file (dev only; pass -vault-addr for Vault Transit)"
	} else {
		vc := vaultapi.DefaultConfig()
		vc.Address = cfg.VaultAddr
		admin, err := vaultapi.NewClient(vc)
		if err != nil {
			return nil, "", cleanup, err
		}
		admin.SetToken(cfg.VaultToken)
		cred, _ := json.Marshal(map[string]string{"address": cfg.VaultAddr, "token": cfg.VaultToken})
		for t := 1; t <= cfg.Tenants; t++ {
			id := gen.TenantOf(t, cfg.Tenants)
			key := run + "-" + id
			if _, err := admin.Logical().WriteWithContext(ctx, "transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
				return nil, "", cleanup, fmt.Errorf("create transit key %s: %w", key, err)
			}
			f.Tenants[id] = tenant.Config{Enabled: true, Provider: "vault", KEKID: key, Credential: cred}
		}
		desc = fmt.Sprintf("Vault Transit at %s, one derived key per tenant (%s-tenant-N)", cfg.VaultAddr, run)
	}
	dir := tenant.NewDirectory(zerolog.Nop())
	dir.Apply(f)
	return dir, desc, cleanup, nil
}

// revocationStep shows granular revocation: the customer revokes the chat of rec through a control
// event, a reader (following the revocations topic, as services/reader does) refuses it while other
// chats still open, and un-revoking restores it.
func revocationStep(ctx context.Context, out io.Writer, brokers []string, run string, dir *tenant.Directory, sink audit.Sink, rec kafka.Message) error {
	var sm byokv1.StoredMessage
	if err := proto.Unmarshal(rec.Value, &sm); err != nil {
		return err
	}
	topics := control.Topics{Settings: run + ".settings", Revocations: run + ".revocations"}
	fmt.Fprintf(out, "\n4. the customer revokes one chat: a control event on %s\n", topics.Revocations)
	store, err := control.OpenStore(ctx, brokers, topics, zerolog.New(io.Discard))
	if err != nil {
		return err
	}
	defer store.Close()
	cache, err := deccache.New(deccache.Config{})
	if err != nil {
		return err
	}
	defer cache.Close()
	store.Subscribe(func(c control.Change) {
		if c.Revoked != nil {
			if rule, err := control.Compile(c.Revoked); err == nil {
				cache.DropScopes(c.TenantID, rule.Matches)
			}
		}
	})
	alog := audit.NewLog(sink, "demo-reader")
	r := &readerapi.Reader{Resolver: &audit.Resolver{Inner: dir, Log: alog}, Log: alog, Cache: cache, Revocations: store}
	req := readerapi.ReadRequest{Caller: callers.New("render-svc", sm.TenantId), OnBehalfOf: "user-42", Purpose: "render"}
	item := []readerapi.ReadItem{{MessageID: sm.MessageId, Envelope: sm.GetEnvelope()}}
	read := func() string {
		_, errs := r.Open(ctx, req, item)
		if errs[0] != nil {
			return readerapi.Reason(errs[0])
		}
		return "opened"
	}
	fmt.Fprintf(out, "   reader (actor render-svc for user-42, purpose render), chat %s/%s: %s\n", sm.TenantId, sm.ChatId, read())
	rv := &byokv1.Revocation{SchemaVersion: control.SchemaVersion, RevocationId: "demo-" + sm.ChatId, TenantId: sm.TenantId,
		ChatId: sm.ChatId, Reason: "demo", CreatedAt: timestamppb.Now(), CreatedBy: "security-team"}
	start := time.Now()
	if err := store.Revoke(ctx, rv); err != nil {
		return err
	}
	fmt.Fprintf(out, "   revoked (%s) → visible to the reader after %s: %q\n", control.Describe(rv), time.Since(start).Round(time.Millisecond), read())
	if err := store.Unrevoke(ctx, sm.TenantId, rv.RevocationId); err != nil {
		return err
	}
	fmt.Fprintf(out, "   un-revoked → %s\n", read())
	st := r.Stats()
	fmt.Fprintf(out, "   every read audited: %d refused as scope_revoked (denied), the others as unwrap or read_cached\n", st.ScopeRevoked)
	return nil
}
