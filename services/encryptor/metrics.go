package main

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/encryptor/worker"
)

// sealObserver records the encrypt latency of each batch (DEK lookup + seal) as
// byok_encrypt_batch_duration_seconds; it is wired in before the worker exists.
func sealObserver(reg *metrics.Registry) func(records int, d time.Duration) {
	dur := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "encrypt_batch_duration_seconds",
		Help:    "Time to get the DEKs of one batch and seal its records (a KMS wrap included when scopes are new).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 100µs … 13s
	})
	size := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "encrypt_batch_records",
		Help:    "Records per sealed batch.",
		Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000},
	})
	reg.MustRegister(dur, size)
	return func(records int, d time.Duration) {
		dur.Observe(d.Seconds())
		size.Observe(float64(records))
	}
}

// registerMetrics exposes the worker's and the DEK manager's counters, read at scrape time.
func registerMetrics(reg *metrics.Registry, w *worker.Worker, deks *dek.Manager, inputTopic string) {
	ws := func(f func(worker.Stats) int64) func() int64 { return func() int64 { return f(w.Stats()) } }
	ds := func(f func(dek.Stats) int64) func() int64 { return func() int64 { return f(deks.Stats()) } }
	reg.Counter("messages_consumed_total", "Records fetched from the plaintext topic.", ws(func(s worker.Stats) int64 { return s.Consumed }))
	reg.Counter("messages_encrypted_total", "Envelopes produced (sealed records).", ws(func(s worker.Stats) int64 { return s.Encrypted }))
	reg.Counter("messages_passed_through_total", "Records of tenants without byok stored unencrypted (-unencrypted-tenants passthrough).", ws(func(s worker.Stats) int64 { return s.PassedThru }))
	reg.Counter("messages_dead_lettered_total", "Records sent to the dead-letter topic (without payload).", ws(func(s worker.Stats) int64 { return s.DeadLettered }))
	reg.Counter("messages_written_total", "Records acknowledged by the storage topic.", ws(func(s worker.Stats) int64 { return s.Written }))
	reg.Counter("message_hold_events_total", "Times a record was held for a failing KMS (each failed retry counts).", ws(func(s worker.Stats) int64 { return s.HoldEvents }))
	reg.Counter("offset_commits_total", "Input offset commits.", ws(func(s worker.Stats) int64 { return s.Commits }))
	reg.Gauge("messages_held", "Records waiting for a failing KMS now.", func() float64 { return float64(w.Stats().Held) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "consumer_lag_records",
		Help:        "Records between the consumer's positions and the high-water marks, summed over the partitions it fetched from in the last minute.",
		ConstLabels: prometheus.Labels{"topic": inputTopic},
	}, func() float64 { return float64(w.Lag()) }))

	reg.Counter("dek_cache_hits_total", "DEK requests served from the cache.", ds(func(s dek.Stats) int64 { return s.CacheHits }))
	reg.Counter("dek_cache_misses_total", "Scopes that needed a new DEK (coalesced requests count once).", ds(func(s dek.Stats) int64 { return s.CacheMisses }))
	reg.Counter("dek_cache_evictions_total", "DEKs dropped and zeroed (expiry, max uses, capacity, tenant change).", ds(func(s dek.Stats) int64 { return s.Evictions }))
	reg.Counter("dek_wrapped_total", "DEKs wrapped by tenants' KMSs.", ds(func(s dek.Stats) int64 { return s.WrappedDEKs }))
	reg.Counter("dek_kms_errors_total", "Wrap calls or items that failed, as the DEK manager saw them.", ds(func(s dek.Stats) int64 { return s.KMSErrors }))
	reg.Gauge("dek_cache_size", "DEKs in the cache now.", func() float64 { return float64(deks.Stats().Cached) })
}

// readiness: Kafka answers and at least one tenant is configured.
func readiness(brokers []string, dir *tenant.Directory) metrics.Health {
	return metrics.Health{Ready: []metrics.Check{
		metrics.KafkaReachable(brokers),
		{Name: "tenants", Fn: func(context.Context) error {
			if len(dir.Tenants()) == 0 {
				return errors.New("no tenants loaded")
			}
			return nil
		}},
	}}
}
