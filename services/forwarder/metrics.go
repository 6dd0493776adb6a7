package main

import (
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/forwarder/forward"
)

// registerMetrics exposes the forwarder's counters, read at scrape time.
func registerMetrics(reg *metrics.Registry, f *forward.Forwarder) {
	fs := func(get func(forward.Stats) int64) func() int64 { return func() int64 { return get(f.Stats()) } }
	reg.Counter("forward_events_consumed_total", "Records fetched from the audit topic.", fs(func(s forward.Stats) int64 { return s.Consumed }))
	reg.Counter("forward_events_delivered_total", "Audit events in batches the tenants' webhooks acknowledged (replays included).", fs(func(s forward.Stats) int64 { return s.Delivered }))
	reg.Counter("forward_batches_delivered_total", "Webhook batches acknowledged.", fs(func(s forward.Stats) int64 { return s.Batches }))
	reg.Counter("forward_delivery_failures_total", "Failed delivery attempts (each retry counts).", fs(func(s forward.Stats) int64 { return s.DeliveryFailures }))
	reg.Counter("forward_rejections_total", "Attempts the receiver rejected (4xx other than 408/429, 3xx).", fs(func(s forward.Stats) int64 { return s.Rejections }))
	reg.Counter("forward_events_untargeted_total", "Events of tenants without a webhook (skipped).", fs(func(s forward.Stats) int64 { return s.Untargeted }))
	reg.Counter("forward_events_undecodable_total", "Records that are not AuditEvents (skipped).", fs(func(s forward.Stats) int64 { return s.Undecodable }))
	reg.Counter("offset_commits_total", "Input offset commits.", fs(func(s forward.Stats) int64 { return s.Commits }))
	reg.Counter("offset_commit_failures_total", "Failed input offset commits.", fs(func(s forward.Stats) int64 { return s.CommitFailures }))
	reg.Gauge("forward_events_held", "Audit events waiting for delivery now.", func() float64 { return float64(f.Stats().Held) })
}
