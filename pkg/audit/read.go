package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// ReadTopic reads every event on the audit topic, from the first offset of each partition up to
// the end it had when the call began. Records that are not AuditEvents are reported as an error:
// the audit topic carries only byok's own events, so one means tampering or a misconfiguration.
func ReadTopic(ctx context.Context, brokers []string, topic string) ([]*byokv1.AuditEvent, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("audit: metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("audit: topic %s not found", topic)
	}
	req := map[string][]kafka.OffsetRequest{}
	for _, p := range meta.Topics[0].Partitions {
		req[topic] = append(req[topic], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, fmt.Errorf("audit: offsets of %s: %w", topic, err)
	}
	var out []*byokv1.AuditEvent
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("audit: partition %d: %w", po.Partition, po.Error)
		}
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: po.Partition, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(po.FirstOffset); err != nil {
			r.Close()
			return nil, err
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("audit: read partition %d: %w", po.Partition, err)
			}
			var ev byokv1.AuditEvent
			if err := proto.Unmarshal(m.Value, &ev); err != nil {
				r.Close()
				return nil, fmt.Errorf("audit: record %d/%d is not an AuditEvent", m.Partition, m.Offset)
			}
			out = append(out, &ev)
			if m.Offset >= po.LastOffset-1 {
				break
			}
		}
		r.Close()
	}
	return out, nil
}
