package control

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
)

// Publisher writes control records, waiting for all in-sync replicas.
type Publisher struct {
	settings, revocations *kafka.Writer
}

// NewPublisher returns a publisher to topics (create them first: EnsureTopics or Follow).
func NewPublisher(brokers []string, topics Topics) *Publisher {
	// One record at a time, sent at once: control records are rare and latency matters.
	return &Publisher{
		settings:    kafkax.NewWriter(brokers, topics.Settings, 1, time.Millisecond),
		revocations: kafkax.NewWriter(brokers, topics.Revocations, 1, time.Millisecond),
	}
}

// PutSettings writes a tenant's settings record.
func (p *Publisher) PutSettings(ctx context.Context, ts *byokv1.TenantSettings) error {
	if err := ValidateSettings(ts); err != nil {
		return err
	}
	b, err := proto.Marshal(ts)
	if err != nil {
		return err
	}
	if err := p.settings.WriteMessages(ctx, kafka.Message{Key: []byte(SettingsKey(ts.TenantId)), Value: b}); err != nil {
		return fmt.Errorf("control: write settings of %s: %w", ts.TenantId, err)
	}
	return nil
}

// Revoke writes a revocation record.
func (p *Publisher) Revoke(ctx context.Context, r *byokv1.Revocation) error {
	if _, err := Compile(r); err != nil {
		return err
	}
	b, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	if err := p.revocations.WriteMessages(ctx, kafka.Message{Key: []byte(RevocationKey(r.TenantId, r.RevocationId)), Value: b}); err != nil {
		return fmt.Errorf("control: write revocation %s of %s: %w", r.RevocationId, r.TenantId, err)
	}
	return nil
}

// Unrevoke writes the tombstone of a revocation.
func (p *Publisher) Unrevoke(ctx context.Context, tenantID, revocationID string) error {
	if err := p.revocations.WriteMessages(ctx, kafka.Message{Key: []byte(RevocationKey(tenantID, revocationID))}); err != nil {
		return fmt.Errorf("control: write un-revocation %s of %s: %w", revocationID, tenantID, err)
	}
	return nil
}

// Close flushes and closes the writers.
func (p *Publisher) Close() error {
	err := p.settings.Close()
	if err2 := p.revocations.Close(); err == nil {
		err = err2
	}
	return err
}

// Store is what the settings service uses: a Publisher whose writes are visible in its View once
// they return (read your writes), on top of the followed state.
type Store struct {
	*View
	pub    *Publisher
	cancel context.CancelFunc
	// Visible bounds how long a write waits to appear in the view (default 10s).
	Visible time.Duration
}

// OpenStore follows the control topics (returning once caught up) and opens a publisher.
func OpenStore(ctx context.Context, brokers []string, topics Topics, log zerolog.Logger) (*Store, error) {
	fctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel) // catching up obeys ctx; following lasts until Close
	v, err := Follow(fctx, brokers, topics, log, FollowOptions{})
	stop()
	if err != nil {
		cancel()
		return nil, err
	}
	return &Store{View: v, pub: NewPublisher(brokers, topics), cancel: cancel, Visible: 10 * time.Second}, nil
}

// PutSettings writes ts and waits until the view shows it.
func (s *Store) PutSettings(ctx context.Context, ts *byokv1.TenantSettings) error {
	if err := s.pub.PutSettings(ctx, ts); err != nil {
		return err
	}
	return s.await(ctx, func() bool {
		cur, ok := s.Settings(ts.TenantId)
		return ok && proto.Equal(cur, ts)
	})
}

// Revoke writes r and waits until the view shows it.
func (s *Store) Revoke(ctx context.Context, r *byokv1.Revocation) error {
	if err := s.pub.Revoke(ctx, r); err != nil {
		return err
	}
	return s.await(ctx, func() bool {
		for _, cur := range s.Revocations(r.TenantId) {
			if proto.Equal(cur, r) {
				return true
			}
		}
		return false
	})
}

// Unrevoke writes the tombstone and waits until the view no longer shows the revocation.
func (s *Store) Unrevoke(ctx context.Context, tenantID, revocationID string) error {
	if err := s.pub.Unrevoke(ctx, tenantID, revocationID); err != nil {
		return err
	}
	return s.await(ctx, func() bool {
		for _, cur := range s.Revocations(tenantID) {
			if cur.RevocationId == revocationID {
				return false
			}
		}
		return true
	})
}

func (s *Store) await(ctx context.Context, visible func() bool) error {
	deadline := time.Now().Add(s.Visible)
	for !visible() {
		if time.Now().After(deadline) {
			return fmt.Errorf("control: written, but not visible after %s", s.Visible)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Close stops following and closes the publisher.
func (s *Store) Close() error {
	s.cancel()
	return s.pub.Close()
}
