package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/auditor/consumer"
)

// timedStore times the consumer's inserts and remembers the newest event time of the last
// batch stored, for byok_audit_insert_duration_seconds and byok_audit_lag_seconds.
type timedStore struct {
	consumer.Store
	duration prometheus.Histogram
	newestNs atomic.Int64 // unix ns of the newest event in the last stored batch; 0 = none yet
}

func newTimedStore(s consumer.Store, reg *metrics.Registry) *timedStore {
	t := &timedStore{Store: s, duration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "audit_insert_duration_seconds",
		Help:    "Time of one batch insert into ClickHouse (failed attempts included).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1ms … 32s
	})}
	reg.MustRegister(t.duration)
	reg.Gauge("audit_lag_seconds", "Now minus the newest event time of the last batch stored in ClickHouse (0 before the first).", t.lag)
	return t
}

// Insert implements consumer.Store.
func (t *timedStore) Insert(ctx context.Context, events []*byokv1.AuditEvent) error {
	start := time.Now()
	err := t.Store.Insert(ctx, events)
	t.duration.Observe(time.Since(start).Seconds())
	if err == nil {
		var newest int64
		for _, ev := range events {
			if ts := ev.GetTime(); ts != nil && ts.AsTime().UnixNano() > newest {
				newest = ts.AsTime().UnixNano()
			}
		}
		if newest > 0 {
			t.newestNs.Store(newest)
		}
	}
	return err
}

func (t *timedStore) lag() float64 {
	newest := t.newestNs.Load()
	if newest == 0 {
		return 0
	}
	return time.Since(time.Unix(0, newest)).Seconds()
}

// registerMetrics exposes the consumer's counters, read at scrape time.
func registerMetrics(reg *metrics.Registry, c *consumer.Consumer) {
	cs := func(f func(consumer.Stats) int64) func() int64 { return func() int64 { return f(c.Stats()) } }
	reg.Counter("audit_events_consumed_total", "Records fetched from the audit topic.", cs(func(s consumer.Stats) int64 { return s.Consumed }))
	reg.Counter("audit_events_inserted_total", "Audit events in batches ClickHouse accepted (replays included).", cs(func(s consumer.Stats) int64 { return s.Inserted }))
	reg.Counter("audit_batches_inserted_total", "Batches stored in ClickHouse.", cs(func(s consumer.Stats) int64 { return s.Batches }))
	reg.Counter("audit_insert_failures_total", "Failed insert attempts (each retry counts).", cs(func(s consumer.Stats) int64 { return s.InsertFailures }))
	reg.Counter("audit_events_undecodable_total", "Records that are not AuditEvents (skipped).", cs(func(s consumer.Stats) int64 { return s.Undecodable }))
	reg.Counter("audit_events_invalid_total", "AuditEvents ClickHouse cannot hold (skipped).", cs(func(s consumer.Stats) int64 { return s.Invalid }))
	reg.Counter("offset_commits_total", "Input offset commits.", cs(func(s consumer.Stats) int64 { return s.Commits }))
	reg.Counter("offset_commit_failures_total", "Failed input offset commits.", cs(func(s consumer.Stats) int64 { return s.CommitFailures }))
}
