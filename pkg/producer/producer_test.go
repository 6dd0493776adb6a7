package producer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/producer"
)

const partitions = 3

// newCluster starts an in-process Kafka with the plaintext topic and returns its brokers.
func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kafkax.TopicPlaintext))
	if err != nil {
		t.Fatalf("kfake.NewCluster() err = %v, want nil", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func newPublisher(t *testing.T, brokers []string) *producer.Publisher {
	t.Helper()
	p, err := producer.New(brokers, producer.WithBatchTimeout(time.Millisecond))
	if err != nil {
		t.Fatalf("New() err = %v, want nil", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close() err = %v, want nil", err)
		}
	})
	return p
}

// readAll returns every record of the plaintext topic, per partition in offset order.
func readAll(t *testing.T, brokers []string) map[int][]kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[int][]kafka.Message{}
	for p := range partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], kafkax.TopicPlaintext, p)
		if err != nil {
			t.Fatalf("DialLeader(partition %d) err = %v, want nil", p, err)
		}
		first, last, err := conn.ReadOffsets()
		conn.Close()
		if err != nil {
			t.Fatalf("ReadOffsets(partition %d) err = %v, want nil", p, err)
		}
		if last == first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: kafkax.TopicPlaintext, Partition: p, MaxWait: 50 * time.Millisecond,
		})
		if err := r.SetOffset(first); err != nil {
			t.Fatalf("SetOffset(%d) err = %v, want nil", first, err)
		}
		for range last - first {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("ReadMessage(partition %d) err = %v, want nil", p, err)
			}
			out[p] = append(out[p], m)
		}
		r.Close()
	}
	return out
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		brokers []string
		opts    []producer.Option
		want    string
	}{
		{"no brokers", nil, nil, "brokers"},
		{"empty broker", []string{"127.0.0.1:9092", " "}, nil, "brokers[1]"},
		{"empty topic", []string{"127.0.0.1:9092"}, []producer.Option{producer.WithTopic("")}, "topic"},
		{"negative batch size", []string{"127.0.0.1:9092"}, []producer.Option{producer.WithBatchSize(-1)}, "batch size"},
		{"negative batch timeout", []string{"127.0.0.1:9092"}, []producer.Option{producer.WithBatchTimeout(-time.Second)}, "batch timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := producer.New(tt.brokers, tt.opts...)
			if err == nil {
				p.Close()
				t.Fatalf("New() err = nil, want an error naming %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() err = %v, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestNewEvent(t *testing.T) {
	before := time.Now()
	e := producer.NewEvent("acme", "general", "u-1", "text/plain", []byte("hi"))
	after := time.Now()
	if err := message.Validate(e); err != nil {
		t.Fatalf("Validate(NewEvent()) err = %v, want nil", err)
	}
	if e.SchemaVersion != message.SchemaVersion || e.TenantId != "acme" || e.ChatId != "general" ||
		e.SenderId != "u-1" || e.ContentType != "text/plain" || string(e.Body) != "hi" {
		t.Errorf("NewEvent() = %v, want the given fields and schema_version %d", e, message.SchemaVersion)
	}
	id, err := uuid.Parse(e.MessageId)
	if err != nil || id.Version() != 7 {
		t.Errorf("NewEvent().MessageId = %q (parse err %v), want a UUIDv7", e.MessageId, err)
	}
	if ts := e.CreatedAt.AsTime(); ts.Before(before.Truncate(time.Microsecond)) || ts.After(after) {
		t.Errorf("NewEvent().CreatedAt = %v, want between %v and %v", ts, before, after)
	}
	if other := producer.NewEvent("acme", "general", "u-1", "text/plain", nil); other.MessageId == e.MessageId {
		t.Errorf("two NewEvent() calls share message id %q", e.MessageId)
	}
}

func TestPublishWritesKeyedRecordsWithHeaders(t *testing.T) {
	brokers := newCluster(t)
	p := newPublisher(t, brokers)

	var events []*byokv1.MessageEvent
	for i := range 30 {
		tenant := fmt.Sprintf("tenant-%d", i%3+1)
		chat := fmt.Sprintf("chat-%d", i%5+1)
		events = append(events, producer.NewEvent(tenant, chat, "u-1", "text/plain", fmt.Appendf(nil, "body %d", i)))
	}
	// Two calls, so that order across calls is checked too.
	if err := p.Publish(context.Background(), events[:10]...); err != nil {
		t.Fatalf("Publish() err = %v, want nil", err)
	}
	if err := p.Publish(context.Background(), events[10:]...); err != nil {
		t.Fatalf("Publish() err = %v, want nil", err)
	}

	byID := map[string]*byokv1.MessageEvent{}
	for _, e := range events {
		byID[e.MessageId] = e
	}
	got := 0
	keyPartition := map[string]int{}
	lastIndex := map[string]int{} // key -> index in events of the last record seen
	for part, records := range readAll(t, brokers) {
		for _, m := range records {
			got++
			id := kafkax.Header(m, kafkax.HeaderMessageID)
			want, ok := byID[id]
			if !ok {
				t.Fatalf("record with %s = %q, want one of the published ids", kafkax.HeaderMessageID, id)
			}
			if k := string(m.Key); k != want.TenantId+"/"+want.ChatId {
				t.Errorf("record %s key = %q, want %q", id, k, want.TenantId+"/"+want.ChatId)
			}
			if h := kafkax.Header(m, kafkax.HeaderTenantID); h != want.TenantId {
				t.Errorf("record %s %s = %q, want %q", id, kafkax.HeaderTenantID, h, want.TenantId)
			}
			if h := kafkax.Header(m, kafkax.HeaderSchema); h != "byok.v1.MessageEvent" {
				t.Errorf("record %s %s = %q, want %q", id, kafkax.HeaderSchema, h, "byok.v1.MessageEvent")
			}
			e, err := message.Unmarshal(m.Value)
			if err != nil {
				t.Fatalf("Unmarshal(record %s) err = %v, want nil", id, err)
			}
			if !proto.Equal(e, want) {
				t.Errorf("record %s = %v, want %v", id, e, want)
			}
			// One chat, one partition, publish order.
			key := string(m.Key)
			if prev, ok := keyPartition[key]; ok && prev != part {
				t.Errorf("key %q in partitions %d and %d, want one", key, prev, part)
			}
			keyPartition[key] = part
			idx := indexOf(events, id)
			if prev, ok := lastIndex[key]; ok && idx < prev {
				t.Errorf("key %q: event %d read after event %d, want publish order", key, idx, prev)
			}
			lastIndex[key] = idx
		}
	}
	if got != len(events) {
		t.Errorf("read %d records, want %d", got, len(events))
	}
}

func indexOf(events []*byokv1.MessageEvent, id string) int {
	for i, e := range events {
		if e.MessageId == id {
			return i
		}
	}
	return -1
}

func TestPublishInvalidPublishesNothing(t *testing.T) {
	const canary = "canary-7f3a-never-in-errors"
	tests := []struct {
		name      string
		mutate    func(*byokv1.MessageEvent)
		wantField string
	}{
		{"missing tenant", func(e *byokv1.MessageEvent) { e.TenantId = "" }, "tenant_id"},
		{"missing chat", func(e *byokv1.MessageEvent) { e.ChatId = "" }, "chat_id"},
		{"control char in message id", func(e *byokv1.MessageEvent) { e.MessageId = "a\x00b" }, "message_id"},
		{"wrong schema version", func(e *byokv1.MessageEvent) { e.SchemaVersion = 2 }, "schema_version"},
		{"no created_at", func(e *byokv1.MessageEvent) { e.CreatedAt = nil }, "created_at"},
		{"body too large", func(e *byokv1.MessageEvent) {
			e.Body = []byte(canary + strings.Repeat("x", message.MaxBodyLen))
		}, "body"},
	}
	brokers := newCluster(t)
	p := newPublisher(t, brokers)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := producer.NewEvent("acme", "general", "u-1", "text/plain", []byte(canary))
			bad := producer.NewEvent("acme", "general", "u-1", "text/plain", []byte(canary))
			tt.mutate(bad)
			err := p.Publish(context.Background(), good, good, bad)
			if !errors.Is(err, message.ErrInvalid) {
				t.Fatalf("Publish() err = %v, want message.ErrInvalid", err)
			}
			var ie *producer.InvalidEventError
			if !errors.As(err, &ie) || ie.Index != 2 {
				t.Errorf("Publish() err = %#v, want *InvalidEventError with Index 2", err)
			}
			if !strings.Contains(err.Error(), tt.wantField) || !strings.Contains(err.Error(), "event 2") {
				t.Errorf("Publish() err = %q, want it to name event 2 and %s", err, tt.wantField)
			}
			if strings.Contains(err.Error(), canary) {
				t.Errorf("Publish() err quotes the body: %q", err)
			}
		})
	}
	for part, records := range readAll(t, brokers) {
		if len(records) != 0 {
			t.Errorf("partition %d has %d records after only invalid publishes, want 0", part, len(records))
		}
	}
}

func TestPublishFailsWhenKafkaIsDown(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kafkax.TopicPlaintext))
	if err != nil {
		t.Fatalf("kfake.NewCluster() err = %v, want nil", err)
	}
	brokers := c.ListenAddrs()
	c.Close()
	p := newPublisher(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := p.Publish(ctx, producer.NewEvent("acme", "general", "u-1", "text/plain", []byte("x"))); err == nil {
		t.Fatal("Publish() with Kafka down err = nil, want an error")
	}
}

func TestPublishNothingIsNoop(t *testing.T) {
	// No broker listens here: an empty Publish must not even try.
	p := newPublisher(t, []string{"127.0.0.1:1"})
	if err := p.Publish(context.Background()); err != nil {
		t.Fatalf("Publish() of no events err = %v, want nil", err)
	}
}
