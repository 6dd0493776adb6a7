// Package producer is the client that messenger services use to publish plaintext MessageEvents
// to byok's plaintext topic. It validates every event before anything is sent, keys records by
// tenant and chat (so one chat keeps its order), and returns only after all in-sync replicas
// have acknowledged the write.
//
// It does not encrypt: encryption happens downstream, in services/encryptor, which is the only
// reader of the plaintext topic. The plaintext topic is the only place a body may appear, so this
// package never logs a body and its errors never quote one.
package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/message"
)

// SchemaName is the value of the kafkax.HeaderSchema header on every record this package writes:
// the protobuf full name of MessageEvent.
var SchemaName = string((&byokv1.MessageEvent{}).ProtoReflect().Descriptor().FullName())

// Option configures a Publisher.
type Option func(*config)

type config struct {
	topic        string
	batchSize    int
	batchTimeout time.Duration
	log          zerolog.Logger
}

// WithTopic sets the topic to publish to (default kafkax.TopicPlaintext).
func WithTopic(topic string) Option { return func(c *config) { c.topic = topic } }

// WithBatchSize sets how many records the writer collects per partition before it sends
// (default 1000, see kafkax.NewWriter). A Publish call is always sent as a whole; the batch only
// lets concurrent calls share a request.
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = n } }

// WithBatchTimeout sets how long the writer waits for a batch to fill before it sends
// (default 5ms, see kafkax.NewWriter). It is the latency a lone Publish call pays.
func WithBatchTimeout(d time.Duration) Option { return func(c *config) { c.batchTimeout = d } }

// WithLogger sets the logger (default: none). Log lines carry counts, topics and durations only.
func WithLogger(log zerolog.Logger) Option { return func(c *config) { c.log = log } }

func (c *config) validate(brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("producer: brokers: at least one broker is required")
	}
	for i, b := range brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("producer: brokers[%d] is empty", i)
		}
	}
	if strings.TrimSpace(c.topic) == "" {
		return errors.New("producer: topic is empty")
	}
	if c.batchSize < 0 {
		return fmt.Errorf("producer: batch size %d is negative", c.batchSize)
	}
	if c.batchTimeout < 0 {
		return fmt.Errorf("producer: batch timeout %s is negative", c.batchTimeout)
	}
	return nil
}

// Publisher publishes MessageEvents to one topic. It is safe for concurrent use; concurrent
// Publish calls share batches.
type Publisher struct {
	w     *kafka.Writer
	topic string
	log   zerolog.Logger
}

// New returns a Publisher writing to brokers. It does not connect until the first Publish, and
// it does not create the topic: topics are created by deployment (kafkax.EnsureTopics).
func New(brokers []string, opts ...Option) (*Publisher, error) {
	cfg := config{topic: kafkax.TopicPlaintext, log: zerolog.Nop()}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(brokers); err != nil {
		return nil, err
	}
	return &Publisher{
		w:     kafkax.NewWriter(brokers, cfg.topic, cfg.batchSize, cfg.batchTimeout),
		topic: cfg.topic,
		log:   cfg.log.With().Str("topic", cfg.topic).Logger(),
	}, nil
}

// InvalidEventError reports the first invalid event of a Publish call. Nothing of that call
// was published. It unwraps to message.ErrInvalid.
type InvalidEventError struct {
	Index int   // position of the event in the Publish call
	Err   error // from message.Validate: names the field, never quotes the body
}

func (e *InvalidEventError) Error() string {
	return fmt.Sprintf("producer: event %d: %v", e.Index, e.Err)
}

func (e *InvalidEventError) Unwrap() error { return e.Err }

// Publish validates all events, then writes them and waits until all in-sync replicas have
// acknowledged every one. If any event is invalid it returns an *InvalidEventError and publishes
// nothing.
//
// On any other error some events may have been written: publish the same events (same message
// ids) again. Consumers deduplicate by message id, so a replay is harmless.
func (p *Publisher) Publish(ctx context.Context, events ...*byokv1.MessageEvent) error {
	if len(events) == 0 {
		return nil
	}
	for i, e := range events {
		if err := message.Validate(e); err != nil {
			return &InvalidEventError{Index: i, Err: err}
		}
	}
	msgs := make([]kafka.Message, len(events))
	for i, e := range events {
		b, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("producer: marshal event %d (message %s): %w", i, e.MessageId, err)
		}
		msgs[i] = kafka.Message{
			Key:   kafkax.RecordKey(e.TenantId, e.ChatId),
			Value: b,
			Headers: []kafka.Header{
				{Key: kafkax.HeaderMessageID, Value: []byte(e.MessageId)},
				{Key: kafkax.HeaderTenantID, Value: []byte(e.TenantId)},
				{Key: kafkax.HeaderSchema, Value: []byte(SchemaName)},
				{Key: kafkax.HeaderContentFormat, Value: []byte("protobuf")},
			},
		}
	}
	start := time.Now()
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		p.log.Warn().Err(err).Int("events", len(events)).Dur("took", time.Since(start)).Msg("publish failed")
		return fmt.Errorf("producer: publish %d events to %s: %w", len(events), p.topic, err)
	}
	p.log.Debug().Int("events", len(events)).Dur("took", time.Since(start)).Msg("published")
	return nil
}

// Close flushes pending writes and releases the connections. Publish must not be called after.
func (p *Publisher) Close() error {
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("producer: close: %w", err)
	}
	return nil
}

// NewEvent returns a MessageEvent of the current schema version with a fresh message id
// (a UUIDv7, so ids sort by creation time) and created_at = now. It does not validate: Publish does.
func NewEvent(tenantID, chatID, senderID, contentType string, body []byte) *byokv1.MessageEvent {
	return &byokv1.MessageEvent{
		SchemaVersion: message.SchemaVersion,
		TenantId:      tenantID,
		ChatId:        chatID,
		MessageId:     NewMessageID(),
		SenderId:      senderID,
		CreatedAt:     timestamppb.Now(),
		ContentType:   contentType,
		Body:          body,
	}
}

// NewMessageID returns a fresh message id: a UUIDv7 in its canonical text form.
func NewMessageID() string {
	// NewV7 fails only when the system's random source does; nothing sensible can go on then.
	return uuid.Must(uuid.NewV7()).String()
}
