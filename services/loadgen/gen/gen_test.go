package gen_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/services/ingest/api"
	"github.com/byok-io/byok/services/loadgen/gen"
)

// countingPublisher stands behind the real ingest handler and records what arrives.
type countingPublisher struct {
	mu       sync.Mutex
	ids      map[string]bool
	tenants  map[string]int
	chats    map[string]int
	chatTen  map[string]string // chat -> tenant
	badBody  int
	mixups   int // a chat seen in two tenants
	dupIDs   int
	invalid  int
	failEach int // fail every failEach-th call when > 0
	calls    int
}

func newCountingPublisher() *countingPublisher {
	return &countingPublisher{ids: map[string]bool{}, tenants: map[string]int{}, chats: map[string]int{}, chatTen: map[string]string{}}
}

func (p *countingPublisher) Publish(_ context.Context, events ...*byokv1.MessageEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.failEach > 0 && p.calls%p.failEach == 0 {
		return errors.New("kafka unavailable")
	}
	for _, e := range events {
		if message.Validate(e) != nil {
			p.invalid++
		}
		if p.ids[e.MessageId] {
			p.dupIDs++
		}
		p.ids[e.MessageId] = true
		p.tenants[e.TenantId]++
		p.chats[e.ChatId]++
		if t, ok := p.chatTen[e.ChatId]; ok && t != e.TenantId {
			p.mixups++
		}
		p.chatTen[e.ChatId] = e.TenantId
		if len(e.Body) != bodySize || strings.IndexFunc(string(e.Body), func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			p.badBody++
		}
	}
	return nil
}

const bodySize = 64

func ingest(t *testing.T, pub api.Publisher) *gen.HTTPSink {
	t.Helper()
	srv := httptest.NewServer(api.NewHandler(pub, zerolog.Nop()))
	t.Cleanup(srv.Close)
	sink, err := gen.NewHTTPSink(srv.URL, nil)
	if err != nil {
		t.Fatalf("NewHTTPSink(%q) err = %v, want nil", srv.URL, err)
	}
	return sink
}

func TestRunThroughIngest(t *testing.T) {
	tests := []struct {
		name string
		cfg  gen.Config
	}{
		{"defaults-like", gen.Config{Messages: 3000, Tenants: 3, Chats: 30, BodySize: bodySize, Concurrency: 8, Batch: 100}},
		{"batch does not divide messages", gen.Config{Messages: 1001, Tenants: 4, Chats: 13, BodySize: bodySize, Concurrency: 3, Batch: 37}},
		{"one at a time", gen.Config{Messages: 50, Tenants: 1, Chats: 1, BodySize: bodySize, Concurrency: 1, Batch: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := newCountingPublisher()
			var progress bytes.Buffer
			res, err := gen.Run(context.Background(), tt.cfg, ingest(t, pub), &progress)
			if err != nil {
				t.Fatalf("Run() err = %v, want nil", err)
			}
			if res.Sent != int64(tt.cfg.Messages) || res.Failed != 0 {
				t.Errorf("Run() = sent %d failed %d, want %d and 0 (first error %v)", res.Sent, res.Failed, tt.cfg.Messages, res.FirstErr)
			}
			if len(pub.ids) != tt.cfg.Messages || pub.dupIDs != 0 || pub.invalid != 0 || pub.badBody != 0 || pub.mixups != 0 {
				t.Errorf("ingest got %d distinct ids (%d duplicates, %d invalid, %d bad bodies, %d chats in two tenants), want %d clean messages",
					len(pub.ids), pub.dupIDs, pub.invalid, pub.badBody, pub.mixups, tt.cfg.Messages)
			}
			// Round-robin over chats: every chat gets its share, give or take one.
			if len(pub.chats) != tt.cfg.Chats {
				t.Errorf("ingest saw %d chats, want %d", len(pub.chats), tt.cfg.Chats)
			}
			per := tt.cfg.Messages / tt.cfg.Chats
			for c := 1; c <= tt.cfg.Chats; c++ {
				id := fmt.Sprintf("chat-%d", c)
				if n := pub.chats[id]; n < per || n > per+1 {
					t.Errorf("%s got %d messages, want %d or %d", id, n, per, per+1)
				}
				if got, want := pub.chatTen[id], gen.TenantOf(c, tt.cfg.Tenants); got != want {
					t.Errorf("%s is in %s, want %s", id, got, want)
				}
			}
			if len(pub.tenants) != tt.cfg.Tenants {
				t.Errorf("ingest saw tenants %v, want %d of them", pub.tenants, tt.cfg.Tenants)
			}
			for i := 1; i <= tt.cfg.Tenants; i++ {
				if pub.tenants[fmt.Sprintf("tenant-%d", i)] == 0 {
					t.Errorf("tenant-%d got no messages, want some", i)
				}
			}
			want := fmt.Sprintf("done: sent=%d errors=0", tt.cfg.Messages)
			if !strings.Contains(progress.String(), want) {
				t.Errorf("progress = %q, want a summary line with %q", progress.String(), want)
			}
		})
	}
}

func TestRunCountsFailures(t *testing.T) {
	pub := newCountingPublisher()
	pub.failEach = 3 // every third batch: ingest answers 503
	cfg := gen.Config{Messages: 900, Tenants: 3, Chats: 9, BodySize: bodySize, Concurrency: 4, Batch: 10}
	res, err := gen.Run(context.Background(), cfg, ingest(t, pub), nil)
	if err != nil {
		t.Fatalf("Run() err = %v, want nil (failures are counted, not returned)", err)
	}
	if res.Sent+res.Failed != int64(cfg.Messages) || res.Failed != 300 || int(res.Sent) != len(pub.ids) {
		t.Errorf("Run() = sent %d failed %d (ingest stored %d), want 600 sent, 300 failed", res.Sent, res.Failed, len(pub.ids))
	}
	var se *gen.StatusError
	if !errors.As(res.FirstErr, &se) || se.Code != 503 || se.Reason != "could not publish, retry" {
		t.Errorf("Run().FirstErr = %v, want a 503 StatusError with ingest's reason", res.FirstErr)
	}
	if !strings.Contains(res.String(), "errors=300") {
		t.Errorf("Result.String() = %q, want errors=300", res.String())
	}
}

// blockingSink blocks every Send until its context ends.
type blockingSink struct{ started atomic.Int64 }

func (b *blockingSink) Send(ctx context.Context, _ []*byokv1.MessageEvent) error {
	b.started.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func TestRunStopsWhenCancelled(t *testing.T) {
	sink := &blockingSink{}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cfg := gen.Config{Messages: 1_000_000, Tenants: 3, Chats: 3, BodySize: 10, Concurrency: 4, Batch: 10}
	start := time.Now()
	res, err := gen.Run(ctx, cfg, sink, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run() err = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run() took %s after cancel, want it to stop promptly", took)
	}
	if n := sink.started.Load(); n > int64(cfg.Concurrency) {
		t.Errorf("%d sends in flight, want at most concurrency %d", n, cfg.Concurrency)
	}
	if res.Sent != 0 || res.Failed != int64(cfg.Concurrency*cfg.Batch) {
		t.Errorf("Run() = sent %d failed %d, want 0 and the %d in flight", res.Sent, res.Failed, cfg.Concurrency*cfg.Batch)
	}
}

// funcSink adapts a function to a Sink.
type funcSink func(context.Context, []*byokv1.MessageEvent) error

func (f funcSink) Send(ctx context.Context, e []*byokv1.MessageEvent) error { return f(ctx, e) }

func TestRunRespectsRateAndConcurrency(t *testing.T) {
	var inFlight, maxInFlight atomic.Int64
	sink := funcSink(func(context.Context, []*byokv1.MessageEvent) error {
		n := inFlight.Add(1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		inFlight.Add(-1)
		return nil
	})
	// 40 messages at 200/s: the last batch is due 195 ms after the start.
	cfg := gen.Config{Messages: 40, Tenants: 2, Chats: 4, BodySize: 1, Concurrency: 2, Batch: 1, Rate: 200}
	res, err := gen.Run(context.Background(), cfg, sink, nil)
	if err != nil || res.Sent != 40 {
		t.Fatalf("Run() = sent %d, err %v, want 40 and nil", res.Sent, err)
	}
	if res.Elapsed < 190*time.Millisecond {
		t.Errorf("Run() took %s at rate 200/s for 40 messages, want at least 195ms", res.Elapsed)
	}
	if m := maxInFlight.Load(); m > int64(cfg.Concurrency) {
		t.Errorf("%d sends were in flight at once, want at most %d", m, cfg.Concurrency)
	}
}

func TestProgressIsReported(t *testing.T) {
	sink := funcSink(func(context.Context, []*byokv1.MessageEvent) error { time.Sleep(10 * time.Millisecond); return nil })
	cfg := gen.Config{Messages: 20, Tenants: 1, Chats: 1, BodySize: 1, Concurrency: 1, Batch: 1, ProgressInterval: 20 * time.Millisecond}
	var progress bytes.Buffer
	if _, err := gen.Run(context.Background(), cfg, sink, &progress); err != nil {
		t.Fatalf("Run() err = %v, want nil", err)
	}
	if n := strings.Count(progress.String(), "progress: sent="); n < 3 {
		t.Errorf("progress has %d progress lines over ~200ms at 20ms, want at least 3:\n%s", n, progress.String())
	}
}

func TestConfigValidate(t *testing.T) {
	ok := gen.DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() err = %v, want nil", err)
	}
	tests := []struct {
		name   string
		mutate func(*gen.Config)
		want   string
	}{
		{"no messages", func(c *gen.Config) { c.Messages = 0 }, "messages"},
		{"no tenants", func(c *gen.Config) { c.Tenants = 0 }, "tenants"},
		{"fewer chats than tenants", func(c *gen.Config) { c.Tenants, c.Chats = 5, 4 }, "chats"},
		{"negative body size", func(c *gen.Config) { c.BodySize = -1 }, "body-size"},
		{"no concurrency", func(c *gen.Config) { c.Concurrency = 0 }, "concurrency"},
		{"negative rate", func(c *gen.Config) { c.Rate = -1 }, "rate"},
		{"no batch", func(c *gen.Config) { c.Batch = 0 }, "batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := gen.DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Validate() err = %v, want one starting with %q", err, tt.want)
			}
			if _, err := gen.Run(context.Background(), c, funcSink(nil), nil); err == nil {
				t.Errorf("Run() with invalid config err = nil, want an error")
			}
		})
	}
}

func TestNewHTTPSinkRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "kafka"} {
		if _, err := gen.NewHTTPSink(u, nil); err == nil {
			t.Errorf("NewHTTPSink(%q) err = nil, want an error", u)
		}
	}
}
