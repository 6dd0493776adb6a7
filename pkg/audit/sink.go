package audit

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/byok-io/byok/pkg/kafkax"
)

// TopicAudit is the default audit topic.
const TopicAudit = "byok.audit"

// KafkaSink writes events to the audit topic, keyed by tenant, acknowledged by all in-sync
// replicas.
type KafkaSink struct {
	w *kafka.Writer
}

// NewKafkaSink returns a sink for topic.
func NewKafkaSink(brokers []string, topic string) *KafkaSink {
	return &KafkaSink{w: kafkax.NewWriter(brokers, topic, 100, time.Millisecond)}
}

// Write implements Sink.
func (s *KafkaSink) Write(ctx context.Context, key, value []byte) error {
	return s.w.WriteMessages(ctx, kafka.Message{Key: key, Value: value,
		Headers: []kafka.Header{{Key: kafkax.HeaderSchema, Value: []byte("byok.v1.AuditEvent")}}})
}

// Close flushes and closes the writer.
func (s *KafkaSink) Close() error { return s.w.Close() }
