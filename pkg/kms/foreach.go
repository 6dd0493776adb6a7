package kms

import (
	"sync"
	"sync/atomic"
)

// ForEach calls f for every index in idx with at most limit calls running at once, and returns
// when all have. Providers whose KMS has no batch call (Yandex, Cloud.ru) use it to serve a
// Wrap or Unwrap of many DEKs with bounded concurrency; f writes its result at its own index.
func ForEach(idx []int, limit int, f func(i int)) {
	workers := min(limit, len(idx))
	if workers <= 1 {
		for _, i := range idx {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if n >= len(idx) {
					return
				}
				f(idx[n])
			}
		})
	}
	wg.Wait()
}
