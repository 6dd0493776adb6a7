package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/byok-io/byok/pkg/metrics"
)

// changeCounts counts the service's changes by operation (settings_change, revoke, unrevoke) and
// result (ok, refused, failed): closed sets, so safe as labels. Never a tenant id.
type changeCounts struct {
	vec *prometheus.CounterVec
}

func newChangeCounts() *changeCounts {
	return &changeCounts{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "settings_changes_total",
		Help: "Settings changes, revocations and un-revocations asked for, by operation and result (ok, refused by validation, failed to record or publish).",
	}, []string{"operation", "result"})}
}

func (c *changeCounts) add(operation, result string) { c.vec.WithLabelValues(operation, result).Inc() }

func (c *changeCounts) register(reg *metrics.Registry) { reg.MustRegister(c.vec) }
