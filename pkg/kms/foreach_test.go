package kms

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestForEachBoundsConcurrencyAndVisitsAll(t *testing.T) {
	for _, limit := range []int{1, 3, 16} {
		idx := []int{0, 2, 4, 5, 7, 9, 11, 12, 13, 19}
		var inFlight, peak atomic.Int64
		seen := make([]atomic.Int64, 20)
		ForEach(idx, limit, func(i int) {
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			seen[i].Add(1)
			inFlight.Add(-1)
		})
		for _, i := range idx {
			if seen[i].Load() != 1 {
				t.Fatalf("limit %d: index %d visited %d times, want 1", limit, i, seen[i].Load())
			}
		}
		if p := peak.Load(); p > int64(limit) || (limit > 1 && p < 2) {
			t.Fatalf("limit %d: peak concurrency %d", limit, p)
		}
	}
}
