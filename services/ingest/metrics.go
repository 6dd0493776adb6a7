package main

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/ingest/api"
)

// metricsOnAPI is the -metrics-listen value that serves /metrics and /readyz on the API
// listener itself (its /healthz is the API's own).
const metricsOnAPI = "api"

// countingPublisher counts the messages ingest hands to Kafka, by result.
type countingPublisher struct {
	api.Publisher
	published *prometheus.CounterVec
}

func newCountingPublisher(p api.Publisher, reg *metrics.Registry) *countingPublisher {
	c := &countingPublisher{Publisher: p, published: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "ingest_messages_total",
		Help: "Messages ingest published to the plaintext topic, by result (ok: acknowledged by Kafka; error: the request failed).",
	}, []string{"result"})}
	c.published.WithLabelValues("ok")
	c.published.WithLabelValues("error")
	reg.MustRegister(c.published)
	return c
}

// Publish implements api.Publisher.
func (c *countingPublisher) Publish(ctx context.Context, events ...*byokv1.MessageEvent) error {
	err := c.Publisher.Publish(ctx, events...)
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.published.WithLabelValues(result).Add(float64(len(events)))
	return err
}

// withMetrics serves /metrics and /readyz from m and everything else (the API, its /healthz)
// from h.
func withMetrics(h, m http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m)
	mux.Handle("/readyz", m)
	mux.Handle("/", h)
	return mux
}
