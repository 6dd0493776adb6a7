// Package kafkax holds byok's Kafka conventions on top of segmentio/kafka-go: topic names, topic
// creation, record keys and headers, and writers configured for no loss (acks from all in-sync
// replicas, never kafka-go's fire-and-forget default).
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Default topic names. Every service takes them from configuration; these are the defaults.
const (
	TopicPlaintext  = "byok.messages.plaintext"  // MessageEvent, the only topic with plaintext bodies
	TopicStored     = "byok.messages.stored"     // StoredMessage with envelopes
	TopicDeadLetter = "byok.messages.deadletter" // input that cannot be processed, reason in headers
)

// Header names used on byok records.
const (
	HeaderMessageID     = "byok-message-id"
	HeaderTenantID      = "byok-tenant-id"
	HeaderSchema        = "byok-schema"         // e.g. "byok.v1.StoredMessage"
	HeaderDLQReason     = "byok-dlq-reason"     // why a record was dead-lettered (never contains a body)
	HeaderDLQSource     = "byok-dlq-source"     // topic/partition/offset of the original record
	HeaderDLQRedacted   = "byok-dlq-redacted"   // "true" when the original payload was withheld
	HeaderContentFormat = "byok-content-format" // "protobuf"
)

// Size limits. A body may be 1 MiB (message.MaxBodyLen), more than a stock broker's 1 MB record
// batch limit, so byok's topics are created with MaxMessageBytes and writers keep each produced
// batch under MaxBatchBytes.
const (
	MaxMessageBytes = 8 << 20
	MaxBatchBytes   = 4 << 20
)

// RecordKey is the Kafka key of every message record: one chat maps to one partition, so one
// chat keeps its order.
func RecordKey(tenantID, chatID string) []byte {
	return []byte(tenantID + "/" + chatID)
}

// Header returns the value of header k, or "".
func Header(m kafka.Message, k string) string {
	for _, h := range m.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// NewWriter returns a writer that waits for all in-sync replicas and hashes keys to partitions
// (the same hash as Java clients), batching up to batchSize records or batchTimeout.
//
// Each writer has a transport of its own. kafka-go's shared default transport caches topic
// metadata for seconds, so a topic created after any writer of the process fetched metadata was
// "unknown" to every writer for that long (writes failed with Unknown Topic Or Partition). Create
// topics before the writers that use them. (Writer.Close does not close a transport it was
// given; its idle connections close after the transport's IdleTimeout, 30 s.)
func NewWriter(brokers []string, topic string, batchSize int, batchTimeout time.Duration) *kafka.Writer {
	if batchSize <= 0 {
		batchSize = 1000
	}
	if batchTimeout <= 0 {
		batchTimeout = 5 * time.Millisecond
	}
	return &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              batchSize,
		BatchBytes:             MaxBatchBytes,
		BatchTimeout:           batchTimeout,
		MaxAttempts:            5,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		AllowAutoTopicCreation: false,
		Transport:              &kafka.Transport{},
	}
}

// TopicSpec is one topic to create.
type TopicSpec struct {
	Name       string
	Partitions int
	// Config holds topic configs, e.g. {"cleanup.policy": "compact"}.
	Config map[string]string
}

// EnsureTopics creates the topics that do not exist yet, with replication factor 1 if the
// cluster has one broker, else min(3, brokers). Existing topics are left as they are.
func EnsureTopics(ctx context.Context, brokers []string, specs ...TopicSpec) error {
	var d kafka.Dialer
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("kafka: dial %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("kafka: find controller: %w", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("kafka: dial controller: %w", err)
	}
	defer cc.Close()
	nb, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("kafka: list brokers: %w", err)
	}
	rf := min(3, len(nb))
	cfgs := make([]kafka.TopicConfig, 0, len(specs))
	for _, s := range specs {
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: rf}
		if _, ok := s.Config["max.message.bytes"]; !ok {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(MaxMessageBytes)})
		}
		for k, v := range s.Config {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		cfgs = append(cfgs, tc)
	}
	if err := cc.CreateTopics(cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("kafka: create topics: %w", err)
	}
	// Wait until every topic has leaders for all partitions.
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range specs {
		for {
			parts, err := conn.ReadPartitions(s.Name)
			if err == nil && len(parts) >= s.Partitions && allLeaders(parts) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("kafka: topic %s not ready: %v", s.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func allLeaders(ps []kafka.Partition) bool {
	for _, p := range ps {
		if p.Leader.Host == "" {
			return false
		}
	}
	return true
}
