package kafkax

import (
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Lag tracks how far a consumer is behind, per partition, from the records it fetches: each record
// carries its partition's high-water mark at fetch time. Total sums the partitions seen recently,
// so a partition this consumer lost in a rebalance stops counting after staleAfter. Safe for
// concurrent use; the zero value is not usable, use NewLag.
type Lag struct {
	staleAfter time.Duration
	now        func() time.Time
	mu         sync.Mutex
	partitions map[int]lagEntry
}

type lagEntry struct {
	lag  int64
	seen time.Time
}

// NewLag returns a Lag that forgets partitions not fetched from for staleAfter.
func NewLag(staleAfter time.Duration) *Lag {
	return &Lag{staleAfter: staleAfter, now: time.Now, partitions: map[int]lagEntry{}}
}

// Observe records the lag of m's partition after m: high-water mark minus the next offset.
func (l *Lag) Observe(m kafka.Message) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.partitions[m.Partition] = lagEntry{lag: max(0, m.HighWaterMark-m.Offset-1), seen: l.now()}
	l.mu.Unlock()
}

// Total is the summed lag of the partitions fetched from within staleAfter.
func (l *Lag) Total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var sum int64
	for p, e := range l.partitions {
		if now.Sub(e.seen) > l.staleAfter {
			delete(l.partitions, p)
			continue
		}
		sum += e.lag
	}
	return sum
}
