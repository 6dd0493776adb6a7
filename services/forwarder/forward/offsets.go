package forward

import (
	"sort"
	"sync"
)

// offsets tracks, per partition, the records fetched but not yet finished (delivered, or skipped)
// in fetch order, and says how far each partition can be committed: up to (not including) the
// oldest unfinished record. A record waiting for a tenant whose receiver is down therefore holds
// back its partition's commits, and a crash replays it; other tenants' records behind it are
// delivered but sent again on replay (duplicates, recognisable by event_id).
// The same design as services/encryptor/worker/offsets.go (unexported there). Safe for
// concurrent use.
type offsets struct {
	mu    sync.Mutex
	parts map[int]*partOffsets
}

type partOffsets struct {
	pending   []pendingOffset // increasing offsets
	committed int64           // last offset committed (-1: none)
}

type pendingOffset struct {
	offset int64
	done   bool
}

func newOffsets() *offsets { return &offsets{parts: map[int]*partOffsets{}} }

// add records a fetched record. When the offset is not after the last one seen (the group
// rebalanced and the reader rewound to the committed offset) the partition's pending list
// restarts there: records still queued from before the rewind are the same records, so their
// acknowledgements still mark the right offsets; they are only delivered twice.
func (o *offsets) add(partition int, offset int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.parts[partition]
	if p == nil {
		p = &partOffsets{committed: -1}
		o.parts[partition] = p
	}
	if n := len(p.pending); n > 0 && offset <= p.pending[n-1].offset {
		p.pending = p.pending[:0]
	}
	p.pending = append(p.pending, pendingOffset{offset: offset})
}

// done marks a record finished.
func (o *offsets) done(partition int, offset int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.parts[partition]
	if p == nil {
		return
	}
	i := sort.Search(len(p.pending), func(i int) bool { return p.pending[i].offset >= offset })
	if i < len(p.pending) && p.pending[i].offset == offset {
		p.pending[i].done = true
	}
}

// committable returns, per partition whose commit point moved, the offset of the last record
// that may be committed (kafka-go's CommitMessages takes the record and commits offset+1).
func (o *offsets) committable() map[int]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[int]int64{}
	for part, p := range o.parts {
		n := 0
		for n < len(p.pending) && p.pending[n].done {
			n++
		}
		if n == 0 {
			continue
		}
		last := p.pending[n-1].offset
		p.pending = append(p.pending[:0], p.pending[n:]...)
		if last > p.committed {
			p.committed = last
			out[part] = last
		}
	}
	return out
}
