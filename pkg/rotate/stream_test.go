package rotate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/rotate"
)

// rotatable is a tenant whose KEK the test can rotate and whose version 1 it can retire.
type rotatable struct {
	id      string
	kms     kms.KMS
	rotate  func(t *testing.T) // make version 2 the latest
	retire1 func(t *testing.T) // make version 1 unusable
}

// storedRecord is the storage record the encryptor writes for m.
func storedRecord(t *testing.T, m message) kafka.Message {
	t.Helper()
	v, err := proto.Marshal(&byokv1.StoredMessage{SchemaVersion: 1, TenantId: m.scope.TenantID, ChatId: m.scope.ChatID,
		MessageId: m.id, Payload: &byokv1.StoredMessage_Envelope{Envelope: m.envelope}})
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: kafkax.RecordKey(m.scope.TenantID, m.scope.ChatID), Value: v, Headers: []kafka.Header{
		{Key: kafkax.HeaderMessageID, Value: []byte(m.id)},
		{Key: kafkax.HeaderTenantID, Value: []byte(m.scope.TenantID)},
		{Key: kafkax.HeaderSchema, Value: []byte("byok.v1.StoredMessage")},
	}}
}

// readTopic reads every record of topic, partition by partition, up to its current end.
func readTopic(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A fresh transport: the default one caches metadata from before the topic existed.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) != 1 {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	req := map[string][]kafka.OffsetRequest{}
	for _, p := range meta.Topics[0].Partitions {
		req[topic] = append(req[topic], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, po := range offs.Topics[topic] {
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: po.Partition, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(po.FirstOffset); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s/%d: %v", topic, po.Partition, err)
			}
			out = append(out, m)
			if m.Offset >= po.LastOffset-1 {
				break
			}
		}
		r.Close()
	}
	return out
}

// byKey groups records by key, in their order.
func byKey(ms []kafka.Message) map[string][]kafka.Message {
	out := map[string][]kafka.Message{}
	for _, m := range ms {
		out[string(m.Key)] = append(out[string(m.Key)], m)
	}
	return out
}

// streamScenario writes a storage topic with acme's v1 envelopes, another tenant's envelopes, a
// pass-through record and a record that is no StoredMessage; rotates acme's KEK; streams the topic
// through rotate.Stream; and checks the copy record by record.
func streamScenario(t *testing.T, brokers []string, acme rotatable, other tenants, method rotate.Method) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	suffix := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	from, to := "rotate-src-"+suffix, "rotate-dst-"+suffix
	if err := kafkax.EnsureTopics(ctx, brokers, kafkax.TopicSpec{Name: from, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	r := tenants{acme.id: acme.kms}
	for id, k := range other {
		r[id] = k
	}
	mine := seal(t, r, acme.id, []string{"general", "random", "ops", "hr"}, 3)
	var theirs []message
	for id := range other {
		theirs = append(theirs, seal(t, r, id, []string{"general"}, 2)...)
	}
	var recs []kafka.Message
	for _, m := range append(append([]message(nil), mine...), theirs...) {
		recs = append(recs, storedRecord(t, m))
	}
	pass, _ := proto.Marshal(&byokv1.StoredMessage{SchemaVersion: 1, TenantId: acme.id, ChatId: "plain", MessageId: "p1",
		Payload: &byokv1.StoredMessage_PlaintextBody{PlaintextBody: []byte("not encrypted")}})
	recs = append(recs,
		kafka.Message{Key: kafkax.RecordKey(acme.id, "plain"), Value: pass, Headers: []kafka.Header{{Key: kafkax.HeaderMessageID, Value: []byte("p1")}}},
		kafka.Message{Key: []byte("junk"), Value: []byte{0xff, 0xff, 0xff}})
	w := kafkax.NewWriter(brokers, from, 100, time.Millisecond)
	if err := w.WriteMessages(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	acme.rotate(t)
	rep, err := rotate.Stream(ctx, acme.kms, rotate.StreamConfig{Brokers: brokers, From: from, To: to, TenantID: acme.id,
		Options: rotate.Options{Method: method}, BatchRecords: 4})
	if err != nil {
		t.Fatalf("Stream err = %v (report %+v)", err, rep)
	}
	want := rotate.StreamReport{Read: len(recs), Written: len(recs), Rewrapped: len(mine), Copied: len(theirs) + 2}
	if rep.Read != want.Read || rep.Written != want.Written || rep.Rewrapped != want.Rewrapped || rep.Copied != want.Copied || rep.Failed != 0 || rep.Current != 0 {
		t.Fatalf("Stream report = %+v, want %+v", rep, want)
	}

	var ends int64
	for _, o := range rep.EndOffsets {
		ends += o
	}
	if len(rep.EndOffsets) != 3 || ends != int64(len(recs)) {
		t.Fatalf("Stream end offsets %v, want 3 partitions summing to %d", rep.EndOffsets, len(recs))
	}

	src, dst := byKey(readTopic(t, brokers, from)), byKey(readTopic(t, brokers, to))
	if len(dst) != len(src) {
		t.Fatalf("target has %d keys, source %d", len(dst), len(src))
	}
	var newEnvs, oldEnvs [][]byte
	var msgIDs []string
	for key, sm := range src {
		dm := dst[key]
		if len(dm) != len(sm) {
			t.Fatalf("key %s: %d records in the target, %d in the source", key, len(dm), len(sm))
		}
		for i := range sm {
			s, d := sm[i], dm[i]
			if fmt.Sprint(s.Headers) != fmt.Sprint(d.Headers) {
				t.Fatalf("key %s record %d: headers %v, want %v", key, i, d.Headers, s.Headers)
			}
			var ss, ds byokv1.StoredMessage
			if !strings.HasPrefix(key, acme.id+"/") || proto.Unmarshal(s.Value, &ss) != nil || ss.GetEnvelope() == nil {
				if !bytes.Equal(s.Value, d.Value) {
					t.Fatalf("key %s record %d (not acme's envelope) changed", key, i)
				}
				continue
			}
			if err := proto.Unmarshal(d.Value, &ds); err != nil || ds.MessageId != ss.MessageId || ds.TenantId != ss.TenantId || ds.ChatId != ss.ChatId {
				t.Fatalf("key %s record %d: target StoredMessage %v, want the source's metadata (err %v)", key, i, &ds, err)
			}
			if v := parse(t, ds.GetEnvelope()).Key.KEKVersion; v != "2" {
				t.Fatalf("key %s record %d: KEK version %q in the target, want 2", key, i, v)
			}
			if !bytes.Equal(body(t, ds.GetEnvelope()), body(t, ss.GetEnvelope())) {
				t.Fatalf("key %s record %d: body ciphertext changed", key, i)
			}
			newEnvs, oldEnvs, msgIDs = append(newEnvs, ds.GetEnvelope()), append(oldEnvs, ss.GetEnvelope()), append(msgIDs, ss.MessageId)
		}
	}
	if len(newEnvs) != len(mine) {
		t.Fatalf("found %d acme envelopes in the target, want %d", len(newEnvs), len(mine))
	}

	// Retire version 1: the copies open, the originals do not.
	acme.retire1(t)
	bodies, errs := open(r, msgIDs, newEnvs)
	for i := range newEnvs {
		if errs[i] != nil || !bytes.HasPrefix(bodies[i], []byte("secret body")) {
			t.Fatalf("open(rewrapped copy %s) err = %v", msgIDs[i], errs[i])
		}
	}
	if _, errs := open(r, msgIDs, oldEnvs); !errors.Is(errs[0], kms.ErrInvalidCiphertext) {
		t.Fatalf("open(original after retiring version 1) err = %v, want kms.ErrInvalidCiphertext", errs[0])
	}
}

// TestStreamInProcess runs the scenario on an in-process Kafka-protocol broker and local keys.
func TestStreamInProcess(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	sink := &memSink{}
	acme, other := newLocalTenant(t, "acme", sink), newLocalTenant(t, "globex", sink)
	streamScenario(t, cluster.ListenAddrs(), rotatable{
		id: "acme", kms: acme.kms,
		rotate:  func(t *testing.T) { acme.rotate(t, "2") },
		retire1: func(t *testing.T) { acme.retire(t, "1") },
	}, tenants{"globex": other.kms}, rotate.MethodRewrap)
}

func TestStreamConfigChecked(t *testing.T) {
	sink := &memSink{}
	acme := newLocalTenant(t, "acme", sink)
	for _, cfg := range []rotate.StreamConfig{
		{From: "a", To: "b", TenantID: "acme"},
		{Brokers: []string{"x:1"}, From: "a", To: "a", TenantID: "acme"},
		{Brokers: []string{"x:1"}, From: "a", To: "b"},
		{Brokers: []string{"x:1"}, From: "a", To: "b", TenantID: "acme", Options: rotate.Options{Method: "decrypt-everything"}},
	} {
		if _, err := rotate.Stream(context.Background(), acme.kms, cfg); err == nil {
			t.Errorf("Stream(%+v) err = nil, want a configuration error", cfg)
		}
	}
}
