package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
)

// StreamConfig says which topic to copy where, and whose envelopes to rewrap on the way.
type StreamConfig struct {
	Brokers  []string
	From, To string // a storage topic of StoredMessages, and the topic that receives the copy
	TenantID string
	Options  Options
	// BatchRecords is how many records are read before their envelopes are rewrapped and the
	// records written (default 500).
	BatchRecords int
}

// StreamReport counts what Stream did with the records it read. Every record read is written,
// so Read == Written when Stream returns no error.
type StreamReport struct {
	Read      int // records read from From, up to the end offsets it had when Stream began
	Written   int // records written to To (acknowledged by all in-sync replicas)
	Rewrapped int // envelopes of the tenant now at the KEK's latest version
	Current   int // envelopes of the tenant already at the latest version, copied unchanged
	Copied    int // records of other tenants, or without an envelope, copied unchanged
	Failed    int // envelopes of the tenant that could not be rewrapped, copied unchanged
	// Version is the KEK version the tenant's envelopes were moved to (or found at).
	Version string
	// EndOffsets are the source's end offsets per partition when Stream began: the copy holds
	// everything before them; a consumer switching to the copy continues the source from there.
	EndOffsets map[int]int64
	// Failures describes the first few failures: partition/offset and the error.
	Failures []string
}

const maxFailures = 20

// Stream copies every record of cfg.From, from the first offset of each partition up to the end
// offsets taken when it starts, to cfg.To with the same key, headers and order per partition —
// rewrapping on the way the envelopes of cfg.TenantID's StoredMessages with k (Rewrap, batches of
// cfg.BatchRecords records). Records of other tenants, records without an envelope and records
// that are not StoredMessages are copied unchanged, as are envelopes that fail to rewrap (counted
// in Failed, so that nothing is lost; re-run once fixed). cfg.To is created like cfg.From if it
// does not exist; it should be new and empty — Stream appends, it does not deduplicate.
//
// Stream stops with an error, and the report so far, when a KMS call fails as a whole, a write is
// not acknowledged, or ctx ends; records written before stay written.
func Stream(ctx context.Context, k kms.KMS, cfg StreamConfig) (StreamReport, error) {
	var rep StreamReport
	if len(cfg.Brokers) == 0 || cfg.From == "" || cfg.To == "" || cfg.TenantID == "" {
		return rep, errors.New("rotate: stream needs brokers, a source topic, a target topic and a tenant")
	}
	if cfg.From == cfg.To {
		return rep, errors.New("rotate: stream source and target must be different topics")
	}
	if err := cfg.Options.validate(); err != nil {
		return rep, err
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 500
	}
	// A transport of its own: kafka-go's shared default one caches metadata, and may have fetched
	// it before cfg.From or cfg.To existed (the audit sink, say): "unknown topic" until its TTL
	// runs out.
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: transport}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.From}})
	if err != nil {
		return rep, fmt.Errorf("rotate: metadata of %s: %w", cfg.From, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return rep, fmt.Errorf("rotate: topic %s not found", cfg.From)
	}
	parts := meta.Topics[0].Partitions
	req := map[string][]kafka.OffsetRequest{}
	for _, p := range parts {
		req[cfg.From] = append(req[cfg.From], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return rep, fmt.Errorf("rotate: offsets of %s: %w", cfg.From, err)
	}
	if err := kafkax.EnsureTopics(ctx, cfg.Brokers, kafkax.TopicSpec{Name: cfg.To, Partitions: len(parts)}); err != nil {
		return rep, fmt.Errorf("rotate: target topic: %w", err)
	}
	w := kafkax.NewWriter(cfg.Brokers, cfg.To, cfg.BatchRecords, 5*time.Millisecond)
	wt := &kafka.Transport{} // created after cfg.To, for the same reason
	defer wt.CloseIdleConnections()
	w.Transport = wt
	defer w.Close()

	rep.EndOffsets = map[int]int64{}
	for _, po := range offs.Topics[cfg.From] {
		if po.Error != nil {
			return rep, fmt.Errorf("rotate: partition %d of %s: %w", po.Partition, cfg.From, po.Error)
		}
		rep.EndOffsets[po.Partition] = po.LastOffset
	}
	for _, po := range offs.Topics[cfg.From] {
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		if err := streamPartition(ctx, k, cfg, w, po.Partition, po.FirstOffset, po.LastOffset, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// streamPartition copies offsets [first, end) of one partition, batch by batch.
func streamPartition(ctx context.Context, k kms.KMS, cfg StreamConfig, w *kafka.Writer, partition int, first, end int64, rep *StreamReport) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers, Topic: cfg.From, Partition: partition,
		MaxWait: 100 * time.Millisecond, MaxBytes: 16 << 20,
	})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return fmt.Errorf("rotate: partition %d: %w", partition, err)
	}
	for next := first; next < end; {
		var batch []kafka.Message
		for len(batch) < cfg.BatchRecords && next < end {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				return fmt.Errorf("rotate: read %s partition %d: %w", cfg.From, partition, err)
			}
			rep.Read++
			next = m.Offset + 1
			batch = append(batch, m)
		}
		out, err := rewrapBatch(ctx, k, cfg, batch, rep)
		if err != nil {
			return err
		}
		if err := w.WriteMessages(ctx, out...); err != nil {
			return fmt.Errorf("rotate: write %s: %w", cfg.To, err)
		}
		rep.Written += len(out)
	}
	return nil
}

// rewrapBatch returns the records to write for batch, in order.
func rewrapBatch(ctx context.Context, k kms.KMS, cfg StreamConfig, batch []kafka.Message, rep *StreamReport) ([]kafka.Message, error) {
	out := make([]kafka.Message, len(batch))
	var idx []int // positions in batch of the tenant's envelopes
	var sms []*byokv1.StoredMessage
	var envs [][]byte
	for i, m := range batch {
		out[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers}
		var sm byokv1.StoredMessage
		if proto.Unmarshal(m.Value, &sm) != nil || sm.TenantId != cfg.TenantID || len(sm.GetEnvelope()) == 0 {
			rep.Copied++
			continue
		}
		idx, sms, envs = append(idx, i), append(sms, &sm), append(envs, sm.GetEnvelope())
	}
	if len(envs) == 0 {
		return out, nil
	}
	results, err := Rewrap(ctx, k, cfg.TenantID, envs, cfg.Options)
	if err != nil {
		return nil, err
	}
	for j, res := range results {
		m := batch[idx[j]]
		switch {
		case res.Err != nil:
			rep.Failed++
			if len(rep.Failures) < maxFailures {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s/%d/%d: %v", m.Topic, m.Partition, m.Offset, res.Err))
			}
		case res.Current:
			rep.Current++
			rep.Version = res.ToVersion
		default:
			sms[j].Payload = &byokv1.StoredMessage_Envelope{Envelope: res.Envelope}
			value, err := proto.Marshal(sms[j])
			if err != nil {
				return nil, fmt.Errorf("rotate: marshal StoredMessage at %s/%d/%d: %w", m.Topic, m.Partition, m.Offset, err)
			}
			out[idx[j]].Value = value
			rep.Rewrapped++
			rep.Version = res.ToVersion
		}
	}
	return out, nil
}
