package kafkax

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
)

// Fetch feeds out with records from r until ctx ends, retrying failed fetches with backoff
// between retryMin and retryMax. It never commits: consumers commit what they finished (Offsets).
// It returns when ctx ends; the caller closes out if it needs to. lag, if not nil, observes every
// record fetched.
func Fetch(ctx context.Context, r *kafka.Reader, out chan<- kafka.Message, retryMin, retryMax time.Duration, lag *Lag, log zerolog.Logger) {
	backoff := retryMin
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Dur("backoff", backoff).Msg("fetch failed; retrying")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, retryMax)
			continue
		}
		backoff = retryMin
		lag.Observe(m)
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}
