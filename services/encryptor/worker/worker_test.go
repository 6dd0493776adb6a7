package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/tenant"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func event(tenantID, chat string, i int, body string) *byokv1.MessageEvent {
	return &byokv1.MessageEvent{
		SchemaVersion: 1, TenantId: tenantID, ChatId: chat, MessageId: fmt.Sprintf("%s-%d", tenantID, i),
		SenderId: "u-1", CreatedAt: timestamppb.New(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)),
		ContentType: "text/plain", Body: []byte(body),
	}
}

func publish(t *testing.T, brokers []string, msgs ...kafka.Message) {
	t.Helper()
	w := kafkax.NewWriter(brokers, kafkax.TopicPlaintext, 100, time.Millisecond)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func record(t *testing.T, ev *byokv1.MessageEvent) kafka.Message {
	b, err := message.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: kafkax.RecordKey(ev.TenantId, ev.ChatId), Value: b}
}

// readAll reads a topic from the start until want records arrived or the deadline passed.
func readAll(t *testing.T, brokers []string, topic string, want int, within time.Duration) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for len(out) < want {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			break
		}
		out = append(out, m)
	}
	return out
}

// recordingKMS remembers every plaintext DEK it wraps, so tests can scan outputs for them.
type recordingKMS struct {
	kms.KMS
	mu   sync.Mutex
	deks [][]byte
}

func (r *recordingKMS) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	r.mu.Lock()
	for _, q := range reqs {
		r.deks = append(r.deks, bytes.Clone(q.DEK))
	}
	r.mu.Unlock()
	return r.KMS.Wrap(ctx, reqs)
}

type recordingResolver struct {
	*tenant.Directory
	mu   sync.Mutex
	kmss map[string]*recordingKMS
}

func (r *recordingResolver) KMSFor(id string) (kms.KMS, error) {
	k, err := r.Directory.KMSFor(id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kmss[id] == nil || r.kmss[id].KMS != k {
		r.kmss[id] = &recordingKMS{KMS: k}
	}
	return r.kmss[id], nil
}

func (r *recordingResolver) allDEKs() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, k := range r.kmss {
		k.mu.Lock()
		out = append(out, k.deks...)
		k.mu.Unlock()
	}
	return out
}

// TestWorkerEndToEnd runs one worker against an in-process broker with four kinds of input:
// a healthy byok tenant, a byok tenant whose KEK is disabled (its KMS denies), a tenant without
// byok, and garbage. It checks outputs, dead letters, holding and release, commits, and that no
// body or DEK leaks into logs, the dead-letter topic or the storage topic.
func TestWorkerEndToEnd(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafkax.TopicPlaintext, kafkax.TopicStored, kafkax.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-acme", "kek-globex"); err != nil {
		t.Fatal(err)
	}
	setDisabled := func(v bool) {
		if err := local.Update(keyFile, func(f *local.File) { f.Keys["kek-globex"].Disabled = v }); err != nil {
			t.Fatal(err)
		}
	}
	setDisabled(true)
	cred, _ := json.Marshal(map[string]string{"key_file": keyFile})
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	dir := tenant.NewDirectory(log)
	dir.Apply(tenant.File{Tenants: map[string]tenant.Config{
		"acme":   {Enabled: true, Provider: "local", KEKID: "kek-acme", Credential: cred},
		"globex": {Enabled: true, Provider: "local", KEKID: "kek-globex", Credential: cred},
		"plain":  {Enabled: false},
	}})
	res := &recordingResolver{Directory: dir, kmss: map[string]*recordingKMS{}}
	deks := dek.New(res, dek.Config{})
	defer deks.Close()

	const canary = "CANARY-body-7f3a9c"
	var msgs []kafka.Message
	var sent []*byokv1.MessageEvent
	for i := 0; i < 30; i++ {
		ev := event("acme", fmt.Sprintf("chat-%d", i%3), i, fmt.Sprintf("%s acme %d", canary, i))
		sent = append(sent, ev)
		msgs = append(msgs, record(t, ev))
	}
	for i := 0; i < 5; i++ {
		ev := event("globex", "chat-x", i, fmt.Sprintf("%s globex %d", canary, i))
		sent = append(sent, ev)
		msgs = append(msgs, record(t, ev))
	}
	msgs = append(msgs, record(t, event("plain", "chat-p", 0, canary+" plain")))
	msgs = append(msgs, kafka.Message{Key: []byte("junk"), Value: []byte(canary + " not protobuf")})
	publish(t, brokers, msgs...)

	w, err := New(Config{
		Brokers: brokers, WorkerID: "w-test", SessionTimeout: 6 * time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}, dir, deks, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	// acme's 30 arrive; globex's 5 are held while its KEK is disabled.
	stored := readAll(t, brokers, kafkax.TopicStored, 30, 20*time.Second)
	if len(stored) != 30 {
		t.Fatalf("stored %d records before globex recovered, want 30", len(stored))
	}
	dead := readAll(t, brokers, kafkax.TopicDeadLetter, 2, 5*time.Second)
	if len(dead) != 2 {
		t.Fatalf("dead-lettered %d records, want 2 (no-byok tenant and garbage)", len(dead))
	}
	for _, d := range dead {
		if len(d.Value) != 0 || kafkax.Header(d, kafkax.HeaderDLQReason) == "" || kafkax.Header(d, kafkax.HeaderDLQSource) == "" {
			t.Fatalf("dead letter %q: want empty payload, a reason and a source", d.Key)
		}
	}
	if s := w.Stats(); s.Held != 5 || s.HoldEvents < 5 {
		t.Fatalf("stats while globex is down = %+v, want 5 held", s)
	}

	setDisabled(false) // the key owner re-enables the KEK: held messages go through
	stored = readAll(t, brokers, kafkax.TopicStored, 35, 20*time.Second)
	if len(stored) != 35 {
		t.Fatalf("stored %d records after globex recovered, want 35", len(stored))
	}

	// Every stored record opens to what was sent, through the KMS as the read path would.
	byID := map[string]*byokv1.MessageEvent{}
	for _, ev := range sent {
		byID[ev.MessageId] = ev
	}
	for _, m := range stored {
		var sm byokv1.StoredMessage
		if err := proto.Unmarshal(m.Value, &sm); err != nil {
			t.Fatal(err)
		}
		want := byID[sm.MessageId]
		if want == nil || string(m.Key) != sm.TenantId+"/"+sm.ChatId || kafkax.Header(m, kafkax.HeaderMessageID) != sm.MessageId {
			t.Fatalf("stored record %s: unexpected id, key %q or headers", sm.MessageId, m.Key)
		}
		body := openStored(t, dir, &sm)
		if string(body) != string(want.Body) {
			t.Fatalf("message %s opened to a different body", sm.MessageId)
		}
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run err = %v", err)
	}
	// Commits: everything finished, so the group's offset is at the end.
	if s := w.Stats(); s.Commits == 0 || s.Encrypted != 35 || s.DeadLettered != 2 {
		t.Fatalf("final stats = %+v", s)
	}
	assertCommittedAll(t, brokers, len(msgs))

	// Canaries: no body or DEK in logs or in any topic's bytes other than the plaintext input.
	var haystack [][]byte
	haystack = append(haystack, logs.Bytes())
	for _, m := range append(stored, dead...) {
		haystack = append(haystack, m.Key, m.Value)
		for _, h := range m.Headers {
			haystack = append(haystack, h.Value)
		}
	}
	needles := [][]byte{[]byte(canary)}
	for _, d := range res.allDEKs() {
		needles = append(needles, d, []byte(hex.EncodeToString(d)), []byte(base64.StdEncoding.EncodeToString(d)))
	}
	if len(needles) < 4 {
		t.Fatal("no DEKs recorded: the canary scan would prove nothing")
	}
	for _, h := range haystack {
		for _, n := range needles {
			if bytes.Contains(h, n) {
				t.Fatalf("a canary (body or DEK) leaked into logs or topics: %q", n)
			}
		}
	}
}

func openStored(t *testing.T, dir *tenant.Directory, sm *byokv1.StoredMessage) []byte {
	t.Helper()
	env, err := envelope.Parse(sm.GetEnvelope())
	if err != nil {
		t.Fatalf("message %s: Parse err = %v", sm.MessageId, err)
	}
	k, err := dir.KMSFor(env.Scope.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := k.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: env.Key.WrappedDEK, Context: env.Scope.KMSContext()}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("unwrap: %v %v", err, res)
	}
	aead := newAEAD(t, res[0].DEK)
	body, err := envelope.Open(aead, env, sm.MessageId)
	if err != nil {
		t.Fatalf("message %s: Open err = %v", sm.MessageId, err)
	}
	return body
}

func assertCommittedAll(t *testing.T, brokers []string, want int) {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: "byok-encryptor", Topics: map[string][]int{kafkax.TopicPlaintext: {0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Topics[kafkax.TopicPlaintext][0].CommittedOffset
	if got != int64(want) {
		t.Fatalf("committed offset = %d, want %d (all input finished)", got, want)
	}
}
