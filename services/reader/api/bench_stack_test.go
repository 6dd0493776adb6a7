package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/pkg/tenant"
)

// stackReader builds a reader on the real stack: a tenant on a Vault derived transit key, audit
// events written to a real Kafka topic with acks=all, and n 200-byte messages sealed in n scopes.
// It skips unless BYOK_TEST_KAFKA_BROKERS and BYOK_TEST_VAULT_ADDR are set (`make bench` sets them).
func stackReader(b *testing.B, n int) (*Reader, []ReadItem) {
	brokersEnv, addr := os.Getenv("BYOK_TEST_KAFKA_BROKERS"), os.Getenv("BYOK_TEST_VAULT_ADDR")
	if brokersEnv == "" || addr == "" {
		b.Skip("needs BYOK_TEST_KAFKA_BROKERS and BYOK_TEST_VAULT_ADDR (make bench starts them)")
	}
	brokers := strings.Split(brokersEnv, ",")
	root := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if root == "" {
		root = "root"
	}
	run := fmt.Sprintf("reader-bench-%d", time.Now().UnixNano())
	admin, err := vaultapi.NewClient(&vaultapi.Config{Address: addr})
	if err != nil {
		b.Fatal(err)
	}
	admin.SetToken(root)
	if _, err := admin.Logical().Write("transit/keys/"+run, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		b.Fatal(err)
	}
	cred, _ := json.Marshal(map[string]string{"address": addr, "token": root})
	dir := tenant.NewDirectory(zerolog.Nop())
	dir.Apply(tenant.File{Tenants: map[string]tenant.Config{"acme": {Enabled: true, Provider: "vault", KEKID: run, Credential: cred}}})
	// One topic for every benchmark of the process: kafka-go caches topic metadata for a few seconds,
	// so a topic created after the first writer started is "unknown" to it for a while.
	topic := "byok.bench.reader-audit"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafkax.EnsureTopics(ctx, brokers, kafkax.TopicSpec{Name: topic, Partitions: 3}); err != nil {
		b.Fatal(err)
	}
	sink := audit.NewKafkaSink(brokers, topic)
	b.Cleanup(func() { sink.Close() })
	al := audit.NewLog(sink, "reader-bench")
	resolver := &audit.Resolver{Inner: dir, Log: al}
	m := dek.New(resolver, dek.Config{})
	b.Cleanup(func() { m.Close() })
	body := make([]byte, 200)
	rand.Read(body)
	items := make([]ReadItem, n)
	for i := range items {
		k, err := m.Key(ctx, scope.Scope{TenantID: "acme", ChatID: fmt.Sprintf("chat-%d", i), Day: scope.DayOf(time.Now())})
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("m-%d", i)
		env, _ := k.Seal(id, body)
		items[i] = ReadItem{MessageID: id, Envelope: env}
	}
	cache, _ := deccache.New(deccache.Config{})
	b.Cleanup(func() { cache.Close() })
	return &Reader{Resolver: resolver, Log: al, Cache: cache}, items
}

// measure runs op at least 1,000 times (and b.N times) and reports the median and p99 latency.
func measure(b *testing.B, op func()) {
	lat := make([]time.Duration, 0, max(b.N, 1000))
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		op()
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	for len(lat) < 1000 {
		t := time.Now()
		op()
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkStackDecryptCached: one message whose DEK is cached; the read_cached audit event goes to
// Kafka (acks=all) before the DEK is used, so this is the latency a caller sees on a cache hit.
func BenchmarkStackDecryptCached(b *testing.B) {
	r, items := stackReader(b, 1)
	if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
		b.Fatal(errs[0])
	}
	measure(b, func() {
		if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
			b.Fatal(errs[0])
		}
	})
}

// BenchmarkStackDecryptUncached: 100 messages of 100 scopes with an empty cache: one batched Vault
// transit decrypt of 100 DEKs and its audit event per op.
func BenchmarkStackDecryptUncached(b *testing.B) {
	r, items := stackReader(b, 100)
	measure(b, func() {
		r.Cache.DropTenant("acme")
		if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
			b.Fatal(errs[0])
		}
	})
}

// BenchmarkStackDecryptUncachedOne: one message, empty cache: a Vault round trip for one DEK.
func BenchmarkStackDecryptUncachedOne(b *testing.B) {
	r, items := stackReader(b, 1)
	measure(b, func() {
		r.Cache.DropTenant("acme")
		if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
			b.Fatal(errs[0])
		}
	})
}

// BenchmarkStackDecryptCachedParallel: cached reads of one tenant from many goroutines at once
// (b.SetParallelism(8) per core). Its msgs/s is bounded by the audit log writing one event per
// tenant chain at a time (each acknowledged by Kafka before the next): the hash chain's order is
// the topic's order.
func BenchmarkStackDecryptCachedParallel(b *testing.B) {
	r, items := stackReader(b, 1)
	if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
		b.Fatal(errs[0])
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
				b.Error(errs[0])
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}

// BenchmarkStackDecryptCachedAsync: as BenchmarkStackDecryptCached with -cached-read-audit=async:
// the read_cached event goes to Kafka in the background.
func BenchmarkStackDecryptCachedAsync(b *testing.B) {
	r, items := stackReader(b, 1)
	r.CachedAudit = CachedAuditAsync
	if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
		b.Fatal(errs[0])
	}
	measure(b, func() {
		if _, errs := r.Open(context.Background(), benchReq, items); errs[0] != nil {
			b.Fatal(errs[0])
		}
	})
	if err := r.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if lost := r.Stats().CachedEventsLost; lost > 0 {
		b.Fatalf("%d read_cached events lost", lost)
	}
}
