package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/producer"
	"github.com/byok-io/byok/services/ingest/api"
)

// TestThroughKafka posts through the handler with the real producer into an in-process Kafka
// and reads the records back.
func TestThroughKafka(t *testing.T) {
	const partitions = 3
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kafkax.TopicPlaintext))
	if err != nil {
		t.Fatalf("kfake.NewCluster() err = %v, want nil", err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	pub, err := producer.New(brokers, producer.WithBatchTimeout(time.Millisecond))
	if err != nil {
		t.Fatalf("producer.New() err = %v, want nil", err)
	}
	defer pub.Close()
	srv := httptest.NewServer(api.NewHandler(pub, zerolog.Nop()))
	defer srv.Close()

	post := func(path, body string) []byte {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s err = %v, want nil", path, err)
		}
		defer resp.Body.Close()
		var raw json.RawMessage
		json.NewDecoder(resp.Body).Decode(&raw)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s status = %d (%s), want 202", path, resp.StatusCode, raw)
		}
		return raw
	}
	var one api.MessageResponse
	json.Unmarshal(post("/v1/messages", `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1","body":"hello"}`), &one)
	var batch api.BatchResponse
	json.Unmarshal(post("/v1/messages:batch", `{"messages":[
		{"tenant_id":"acme","chat_id":"random","sender_id":"u-2","body":"second"},
		{"tenant_id":"globex","chat_id":"general","sender_id":"u-3","body_base64":"AP8="}]}`), &batch)

	want := map[string]struct{ key, tenant, body string }{
		one.MessageID: {"acme/general", "acme", "hello"},
	}
	if len(batch.MessageIDs) == 2 {
		want[batch.MessageIDs[0]] = struct{ key, tenant, body string }{"acme/random", "acme", "second"}
		want[batch.MessageIDs[1]] = struct{ key, tenant, body string }{"globex/general", "globex", "\x00\xff"}
	}
	if len(want) != 3 {
		t.Fatalf("got ids %q and %q, want 3 distinct message ids", one.MessageID, batch.MessageIDs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := 0
	for p := range partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], kafkax.TopicPlaintext, p)
		if err != nil {
			t.Fatalf("DialLeader(%d) err = %v, want nil", p, err)
		}
		first, last, err := conn.ReadOffsets()
		conn.Close()
		if err != nil {
			t.Fatalf("ReadOffsets(%d) err = %v, want nil", p, err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: kafkax.TopicPlaintext, Partition: p, MaxWait: 50 * time.Millisecond})
		r.SetOffset(first)
		for range last - first {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("ReadMessage(%d) err = %v, want nil", p, err)
			}
			seen++
			id := kafkax.Header(m, kafkax.HeaderMessageID)
			w, ok := want[id]
			if !ok {
				t.Errorf("record with unexpected message id %q", id)
				continue
			}
			e, err := message.Unmarshal(m.Value)
			if err != nil {
				t.Fatalf("Unmarshal(record %s) err = %v, want nil", id, err)
			}
			if string(m.Key) != w.key || kafkax.Header(m, kafkax.HeaderTenantID) != w.tenant ||
				kafkax.Header(m, kafkax.HeaderSchema) != "byok.v1.MessageEvent" || string(e.Body) != w.body || e.MessageId != id {
				t.Errorf("record %s: key %q tenant header %q schema %q body %q, want %q %q byok.v1.MessageEvent %q",
					id, m.Key, kafkax.Header(m, kafkax.HeaderTenantID), kafkax.Header(m, kafkax.HeaderSchema), e.Body, w.key, w.tenant, w.body)
			}
		}
		r.Close()
	}
	if seen != len(want) {
		t.Errorf("read %d records, want %d", seen, len(want))
	}
}
