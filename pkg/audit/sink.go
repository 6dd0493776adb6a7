package audit

import (
	"context"
	"errors"
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

// NewKafkaSink returns a sink for topic. Its batches hold two of Log's groups, so a group is
// rarely split across produce requests (a split group that fails in part is retried by Log).
func NewKafkaSink(brokers []string, topic string) *KafkaSink {
	return &KafkaSink{w: kafkax.NewWriter(brokers, topic, 2*MaxGroup, time.Millisecond)}
}

func (s *KafkaSink) message(key, value []byte) kafka.Message {
	return kafka.Message{Key: key, Value: value,
		Headers: []kafka.Header{{Key: kafkax.HeaderSchema, Value: []byte("byok.v1.AuditEvent")}}}
}

// Write implements Sink.
func (s *KafkaSink) Write(ctx context.Context, key, value []byte) error {
	return s.w.WriteMessages(ctx, s.message(key, value))
}

// WriteBatch implements BatchSink: one WriteMessages call, per-value errors when only some fail.
func (s *KafkaSink) WriteBatch(ctx context.Context, key []byte, values [][]byte) ([]error, error) {
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = s.message(key, v)
	}
	err := s.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return make([]error, len(values)), nil
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(values) {
		return we, nil
	}
	return nil, err
}

// Close flushes and closes the writer.
func (s *KafkaSink) Close() error { return s.w.Close() }
