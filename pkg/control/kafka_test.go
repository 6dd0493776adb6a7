package control

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/internal/testenv"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/scope"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFollowOnKafka: a store's writes reach another worker's view, a worker started later knows
// everything once Follow returns, tombstones un-revoke, and garbage on the topic is skipped.
func TestFollowOnKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sfx := fmt.Sprint(time.Now().UnixNano())
	topics := Topics{Settings: "test.settings." + sfx, Revocations: "test.revocations." + sfx}

	store, err := OpenStore(ctx, brokers, topics, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	workerCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	worker, err := Follow(workerCtx, brokers, topics, zerolog.Nop(), FollowOptions{SyncInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	revoked := make(chan string, 10)
	worker.Subscribe(func(c Change) {
		if c.Revoked != nil {
			revoked <- c.Revoked.RevocationId
		}
	})

	ts := &byokv1.TenantSettings{SchemaVersion: 1, TenantId: "acme", Enabled: true, Provider: "vault", KekId: "k1",
		SealedCredential: []byte("sealed"), Revision: 1, UpdatedAt: timestamppb.Now()}
	if err := store.PutSettings(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if got, ok := store.Settings("acme"); !ok || got.Revision != 1 {
		t.Fatalf("store does not read its own write: %v %v", got, ok)
	}
	r := &byokv1.Revocation{SchemaVersion: 1, TenantId: "acme", RevocationId: "r1", ChatId: "c1", CreatedAt: timestamppb.Now()}
	start := time.Now()
	if err := store.Revoke(ctx, r); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-revoked:
		t.Logf("revocation reached the other worker %s after the write started", time.Since(start))
		if id != "r1" {
			t.Fatalf("revoked %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revocation did not reach the other worker")
	}
	s := scope.Scope{TenantID: "acme", ChatID: "c1", Day: scope.DayOf(time.Now())}
	if _, ok := worker.Revoked(s); !ok {
		t.Fatal("worker view does not match the revoked scope")
	}
	eventually(t, "worker synced", func() bool { return worker.SyncedWithin(time.Second) })

	// Garbage written straight to the topic is skipped, not applied, and does not stop the follower.
	w := kafkax.NewWriter(brokers, topics.Revocations, 1, time.Millisecond)
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("acme/junk"), Value: []byte("not protobuf \xff\xff")}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	eventually(t, "garbage skipped", func() bool { return worker.Skipped() == 1 })

	// A worker that starts now knows the revocation and the settings when Follow returns.
	late, err := Follow(ctx, brokers, topics, zerolog.Nop(), FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := late.Revoked(s); !ok {
		t.Fatal("a worker started after the revocation does not know it")
	}
	if got, ok := late.Settings("acme"); !ok || got.KekId != "k1" {
		t.Fatal("a worker started after the settings does not know them")
	}

	if err := store.Unrevoke(ctx, "acme", "r1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "un-revoke reaches both workers", func() bool {
		_, a := worker.Revoked(s)
		_, b := late.Revoked(s)
		return !a && !b
	})

	// A follower cut off from Kafka stops reporting itself synced.
	stopWorker()
	time.Sleep(300 * time.Millisecond)
	if worker.SyncedWithin(200 * time.Millisecond) {
		t.Fatal("a stopped follower still reports itself synced")
	}
}
