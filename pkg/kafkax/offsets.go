package kafkax

import (
	"sort"
	"sync"
)

// Offsets tracks, per partition, the records a consumer fetched but has not finished, in fetch
// order, and says how far each partition can be committed: up to (not including) the oldest
// unfinished record. A record held back (a failing KMS, a receiver that is down) therefore holds
// back its partition's commits and is replayed after a crash; records behind it that were
// finished are replayed too, which outputs keyed and deduplicated by id make harmless. The
// encryptor, the auditor's peers and the forwarder all commit this way.
// It is safe for concurrent use.
type Offsets struct {
	mu    sync.Mutex
	parts map[int]*partOffsets
}

type partOffsets struct {
	pending   []pendingOffset // increasing offsets
	committed int64           // next offset to commit (Kafka semantics: offset of the next record)
}

type pendingOffset struct {
	offset int64
	done   bool
}

// NewOffsets returns an empty tracker.
func NewOffsets() *Offsets { return &Offsets{parts: map[int]*partOffsets{}} }

// Add records a fetched record. It reports false when the offset is not after the last one seen
// for the partition: the group rebalanced and the reader rewound to the committed offset, so the
// partition's state was reset and the caller must drop any held work of it.
func (o *Offsets) Add(partition int, offset int64) (inOrder bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.parts[partition]
	if p == nil {
		p = &partOffsets{committed: -1}
		o.parts[partition] = p
	}
	if n := len(p.pending); n > 0 && offset <= p.pending[n-1].offset {
		p.pending = p.pending[:0]
		p.pending = append(p.pending, pendingOffset{offset: offset})
		return false
	}
	p.pending = append(p.pending, pendingOffset{offset: offset})
	return true
}

// Done marks a record finished.
func (o *Offsets) Done(partition int, offset int64) {
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

// Committable returns, per partition whose commit point moved, the offset of the last record
// that may be committed (kafka-go's CommitMessages takes the record and commits offset+1).
func (o *Offsets) Committable() map[int]int64 {
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

// InFlight is the number of records fetched and not finished.
func (o *Offsets) InFlight() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, p := range o.parts {
		for _, x := range p.pending {
			if !x.done {
				n++
			}
		}
	}
	return n
}
