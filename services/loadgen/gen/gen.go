// Package gen generates message load for long runs against byok: synthetic MessageEvents spread
// over tenants and chats, sent in batches by a bounded number of workers, optionally at a fixed
// rate, with progress reported every second.
//
// Where the messages go is a Sink: HTTPSink posts to the ingest service, KafkaSink publishes to
// the plaintext topic directly. Configuration from flags lives in services/loadgen's main.
package gen

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/producer"
)

// Sink sends a batch of events and returns once they are stored, or with an error. Send is
// called from several goroutines at once and must be safe for that.
type Sink interface {
	Send(ctx context.Context, events []*byokv1.MessageEvent) error
}

// Config describes a run.
type Config struct {
	Messages    int     // total messages to send; the run stops after them
	Tenants     int     // tenant ids tenant-1..tenant-N
	Chats       int     // chat ids chat-1..chat-N, spread round-robin over the tenants
	BodySize    int     // bytes of random printable text per body
	Concurrency int     // batches in flight at once
	Rate        float64 // messages per second over the whole run; 0 means as fast as possible
	Batch       int     // messages per Send

	// ProgressInterval is how often progress is written (default one second).
	ProgressInterval time.Duration
	// Seed makes bodies and senders reproducible; 0 picks a random seed.
	Seed uint64
}

// DefaultConfig returns the defaults of the loadgen command.
func DefaultConfig() Config {
	return Config{Messages: 10000, Tenants: 3, Chats: 100, BodySize: 200, Concurrency: 8, Batch: 100}
}

// Validate checks cfg; errors name the setting.
func (c Config) Validate() error {
	switch {
	case c.Messages <= 0:
		return fmt.Errorf("messages must be positive, got %d", c.Messages)
	case c.Tenants <= 0:
		return fmt.Errorf("tenants must be positive, got %d", c.Tenants)
	case c.Chats < c.Tenants:
		return fmt.Errorf("chats (%d) must be at least tenants (%d), so every tenant has a chat", c.Chats, c.Tenants)
	case c.BodySize < 0:
		return fmt.Errorf("body-size must not be negative, got %d", c.BodySize)
	case c.Concurrency <= 0:
		return fmt.Errorf("concurrency must be positive, got %d", c.Concurrency)
	case c.Rate < 0:
		return fmt.Errorf("rate must not be negative, got %g", c.Rate)
	case c.Batch <= 0:
		return fmt.Errorf("batch must be positive, got %d", c.Batch)
	case c.ProgressInterval < 0:
		return fmt.Errorf("progress interval must not be negative, got %s", c.ProgressInterval)
	}
	return nil
}

// TenantOf returns the tenant id of chat n (1-based): chats are dealt round-robin to tenants,
// so chat-1 belongs to tenant-1, chat-2 to tenant-2, and chat-(tenants+1) to tenant-1 again.
func TenantOf(chat, tenants int) string {
	return fmt.Sprintf("tenant-%d", (chat-1)%tenants+1)
}

// Result is the outcome of a run.
type Result struct {
	Sent     int64         // messages the sink accepted
	Failed   int64         // messages in batches the sink failed (they may or may not be stored)
	Elapsed  time.Duration // from start to the last answer
	FirstErr error         // the first Send error, if any
}

// Rate returns accepted messages per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// String is the summary line.
func (r Result) String() string {
	s := fmt.Sprintf("done: sent=%d errors=%d elapsed=%s rate=%.0f msg/s",
		r.Sent, r.Failed, r.Elapsed.Round(time.Millisecond), r.Rate())
	if r.FirstErr != nil {
		s += fmt.Sprintf(" first_error=%q", r.FirstErr.Error())
	}
	return s
}

// Run sends cfg.Messages messages to sink and returns when all were answered, or when ctx ends
// (then with ctx's error; batches cut short count as failed). A failing batch does not stop the
// run: it is counted in Result.Failed. Progress lines and the summary go to progress, if not nil.
func Run(ctx context.Context, cfg Config, sink Sink, progress io.Writer) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = time.Second
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	var (
		sent, failed atomic.Int64
		errOnce      sync.Once
		firstErr     error
	)
	start := time.Now()
	batches := make(chan []*byokv1.MessageEvent, cfg.Concurrency)
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() {
			for b := range batches {
				if ctx.Err() != nil {
					continue // never sent: neither sent nor failed; drain so generate is not stuck
				}
				if err := sink.Send(ctx, b); err != nil {
					failed.Add(int64(len(b)))
					errOnce.Do(func() { firstErr = err })
					continue
				}
				sent.Add(int64(len(b)))
			}
		})
	}

	stopProgress := make(chan struct{})
	var reporter sync.WaitGroup
	if progress != nil {
		reporter.Go(func() {
			t := time.NewTicker(cfg.ProgressInterval)
			defer t.Stop()
			var lastSent int64
			last := start
			for {
				select {
				case <-stopProgress:
					return
				case now := <-t.C:
					s := sent.Load()
					fmt.Fprintf(progress, "progress: sent=%d/%d errors=%d rate=%.0f msg/s\n",
						s, cfg.Messages, failed.Load(), float64(s-lastSent)/now.Sub(last).Seconds())
					lastSent, last = s, now
				}
			}
		})
	}

	genErr := generate(ctx, cfg, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), start, batches)
	close(batches)
	workers.Wait()
	close(stopProgress)
	reporter.Wait()

	res := Result{Sent: sent.Load(), Failed: failed.Load(), Elapsed: time.Since(start), FirstErr: firstErr}
	if progress != nil {
		fmt.Fprintln(progress, res)
	}
	if genErr != nil {
		return res, genErr
	}
	if res.Failed > 0 && ctx.Err() != nil {
		return res, ctx.Err() // the last batches were cut short
	}
	return res, nil
}

// generate builds the batches and hands them to the workers, pacing them to cfg.Rate. Message i
// goes to chat (i mod Chats)+1, so chats and tenants get even shares.
func generate(ctx context.Context, cfg Config, rng *rand.Rand, start time.Time, out chan<- []*byokv1.MessageEvent) error {
	for made := 0; made < cfg.Messages; {
		if cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(made) / cfg.Rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
		n := min(cfg.Batch, cfg.Messages-made)
		b := make([]*byokv1.MessageEvent, n)
		for i := range b {
			chat := (made+i)%cfg.Chats + 1
			b[i] = producer.NewEvent(TenantOf(chat, cfg.Tenants), fmt.Sprintf("chat-%d", chat),
				fmt.Sprintf("user-%d", rng.IntN(1000)+1), "text/plain", randomText(rng, cfg.BodySize))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case out <- b:
		}
		made += n
	}
	return nil
}

const printable = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?-'"

// randomText returns n bytes of printable ASCII, with spaces so that it reads like words.
func randomText(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = printable[rng.IntN(len(printable))]
	}
	return b
}
