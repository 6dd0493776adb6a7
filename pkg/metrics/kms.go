package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KMS counts calls to tenants' KMSs. Its Observe method has the shape of audit.Observer, so the
// audit wrapper — the one place every KMS call passes — feeds it.
type KMS struct {
	calls   *prometheus.CounterVec
	deks    *prometheus.HistogramVec
	latency *prometheus.HistogramVec
}

// NewKMS registers the KMS series on r:
//
//	byok_kms_calls_total{provider,operation,result}
//	byok_kms_call_deks{provider,operation}             DEKs per call (batch size)
//	byok_kms_call_duration_seconds{provider,operation}
func NewKMS(r prometheus.Registerer) *KMS {
	k := &KMS{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "kms_calls_total",
			Help: "Calls to tenants' KMSs, by provider, operation (wrap, unwrap, describe) and result (ok, denied, error, not_recorded).",
		}, []string{"provider", "operation", "result"}),
		deks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "kms_call_deks",
			Help:    "DEKs per KMS call (the batch size).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}, []string{"provider", "operation"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "kms_call_duration_seconds",
			Help:    "Time of one KMS call, including recording its audit event.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms … 8s
		}, []string{"provider", "operation"}),
	}
	r.MustRegister(k.calls, k.deks, k.latency)
	return k
}

// Observe records one KMS call. Provider, operation and result must come from closed sets
// (audit's constants); deks is the number of DEKs in the call (0 for describe).
func (k *KMS) Observe(provider, operation, result string, deks int, latency time.Duration) {
	k.calls.WithLabelValues(provider, operation, result).Inc()
	if deks > 0 {
		k.deks.WithLabelValues(provider, operation).Observe(float64(deks))
	}
	k.latency.WithLabelValues(provider, operation).Observe(latency.Seconds())
}
