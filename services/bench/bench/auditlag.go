package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/services/auditor/consumer"
)

// lagStore wraps the ClickHouse store and records, for every event it stores, how long after
// the event's time the insert was acknowledged: the audit lag a customer's analyst sees.
type lagStore struct {
	inner consumer.Store
	mu    sync.Mutex
	lags  []time.Duration
}

func (l *lagStore) Insert(ctx context.Context, events []*byokv1.AuditEvent) error {
	if err := l.inner.Insert(ctx, events); err != nil {
		return err
	}
	now := time.Now()
	l.mu.Lock()
	for _, ev := range events {
		l.lags = append(l.lags, now.Sub(ev.Time.AsTime()))
	}
	l.mu.Unlock()
	return nil
}

func (l *lagStore) stats() (n int, p50, p99, maxLag time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lags) == 0 {
		return 0, 0, 0, 0
	}
	s := append([]time.Duration(nil), l.lags...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return len(s), s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

// auditPipeline is an audit topic, an auditor consumer writing to ClickHouse, and the resolver
// wrapper that makes the encryptor emit events: the full audit path under the benchmark's load.
type auditPipeline struct {
	store  *lagStore
	sink   *audit.KafkaSink
	cancel context.CancelFunc
	done   chan error
	c      *consumer.Consumer
	ch     *chstore.Store
}

// startAudit starts the pipeline on topic, which must exist (Run creates it with the others).
func startAudit(ctx context.Context, cfg Config, brokers []string, topic string, progress io.Writer) (*auditPipeline, error) {
	db := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	ch, err := chstore.Open(ctx, cfg.AuditClickHouse, db)
	if err != nil {
		return nil, err
	}
	if _, err := ch.Migrate(ctx); err != nil {
		ch.Close()
		return nil, err
	}
	p := &auditPipeline{store: &lagStore{inner: ch}, sink: audit.NewKafkaSink(brokers, topic), done: make(chan error, 1), ch: ch}
	p.c, err = consumer.New(consumer.Config{Brokers: brokers, Topic: topic, GroupID: topic + ".auditor", SessionTimeout: 6 * time.Second},
		p.store, zerolog.New(progress).Level(zerolog.WarnLevel))
	if err != nil {
		ch.Close()
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go func() { p.done <- p.c.Run(cctx) }()
	return p, nil
}

func (p *auditPipeline) resolver(inner dek.Resolver, workerID string) dek.Resolver {
	return &audit.Resolver{Inner: inner, Log: audit.NewLog(p.sink, workerID), Fallback: audit.Access{ActorService: "encryptor", Purpose: "encrypt"}}
}

// finish waits until want events are stored (or 60 s), stops the consumer and reports the lag.
func (p *auditPipeline) finish(want int64, out io.Writer) {
	deadline := time.Now().Add(60 * time.Second)
	for p.c.Stats().Inserted < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	p.cancel()
	<-p.done
	p.sink.Close()
	p.ch.Close()
	n, p50, p99, maxLag := p.store.stats()
	fmt.Fprintf(out, "| audit events stored in ClickHouse | %d of %d |\n", n, want)
	fmt.Fprintf(out, "| audit lag, event time → ClickHouse insert acknowledged | p50 %v, p99 %v, max %v (auditor flush interval 1s) |\n",
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), maxLag.Round(time.Millisecond))
}
