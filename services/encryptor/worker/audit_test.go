package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/tenant"
)

// flakySink is an audit sink that refuses writes while down.
type flakySink struct {
	down    atomic.Bool
	written atomic.Int64
}

func (f *flakySink) Write(context.Context, []byte, []byte) error {
	if f.down.Load() {
		return errors.New("audit topic unreachable")
	}
	f.written.Add(1)
	return nil
}

// TestNoAuditNoEncryption is invariant 3 at the encryptor: while audit events cannot be recorded,
// the KMS results are not used, so nothing is sealed, nothing is written in clear, and the
// records wait; once audit is back they go through.
func TestNoAuditNoEncryption(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafkax.TopicPlaintext, kafkax.TopicStored, kafkax.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-acme"); err != nil {
		t.Fatal(err)
	}
	cred, _ := json.Marshal(map[string]string{"key_file": keyFile})
	dir := tenant.NewDirectory(zerolog.Nop())
	dir.Apply(tenant.File{Tenants: map[string]tenant.Config{"acme": {Enabled: true, Provider: "local", KEKID: "kek-acme", Credential: cred}}})
	sink := &flakySink{}
	sink.down.Store(true)
	deks := dek.New(&audit.Resolver{Inner: dir, Log: audit.NewLog(sink, "w"), Fallback: audit.Access{ActorService: "encryptor", Purpose: "encrypt"}}, dek.Config{})
	defer deks.Close()

	var msgs []kafka.Message
	for i := 0; i < 20; i++ {
		msgs = append(msgs, record(t, event("acme", fmt.Sprintf("chat-%d", i%4), i, "secret body")))
	}
	publish(t, brokers, msgs...)
	w, err := New(Config{Brokers: brokers, SessionTimeout: 6 * time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}, dir, deks, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().HoldEvents < 40 && time.Now().Before(deadline) { // held, retried at least once
		time.Sleep(20 * time.Millisecond)
	}
	if s := w.Stats(); s.Held != 20 || s.Written != 0 || s.Encrypted != 0 {
		t.Fatalf("with audit down: stats %+v, want all 20 held and nothing written", s)
	}
	sink.down.Store(false)
	if got := readAll(t, brokers, kafkax.TopicStored, 20, 20*time.Second); len(got) != 20 {
		t.Fatalf("after audit recovered: %d stored, want 20", len(got))
	}
	if sink.written.Load() == 0 {
		t.Fatal("records were sealed but no audit event was written")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
