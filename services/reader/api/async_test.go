package api

import (
	"context"
	"testing"
	"time"
)

// TestAsyncCachedAudit: in async mode a cache hit is answered without waiting for its read_cached
// event, the event is still recorded, and after a background write fails cache hits are recorded
// before they are answered again (refused while the audit log is down), until it is back.
func TestAsyncCachedAudit(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.reader.CachedAudit = CachedAuditAsync
	items := f.sealed["acme"]
	f.checkOK(t, f.decrypt(t, items)) // unwrap (always recorded first) fills the cache

	const delay = 300 * time.Millisecond
	f.sink.delayNanos.Store(int64(delay))
	start := time.Now()
	f.checkOK(t, f.decrypt(t, items))
	if took := time.Since(start); took >= delay {
		t.Fatalf("a cache hit in async mode took %s: it waited for its audit write (%s)", took, delay)
	}
	if err := f.reader.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.sink.byOp()[OpReadCached+"/ok"]); n != 1 {
		t.Fatalf("read_cached events after Flush = %d, want 1", n)
	}

	// The audit log goes down: the next hit is answered, its event is lost and counted; from then
	// on hits wait for their record, and so are refused.
	f.sink.delayNanos.Store(0)
	f.sink.failing.Store(true)
	f.checkOK(t, f.decrypt(t, items))
	f.reader.Flush(context.Background())
	if lost := f.reader.Stats().CachedEventsLost; lost != 1 {
		t.Fatalf("CachedEventsLost = %d, want 1", lost)
	}
	for _, r := range f.decrypt(t, items).Results {
		if r.Error != ReasonAuditUnavailable {
			t.Fatalf("cache hit after a lost event, audit still down = %+v, want %q", r, ReasonAuditUnavailable)
		}
	}
	// Back up: the first hit is recorded synchronously, then async mode resumes.
	f.sink.failing.Store(false)
	f.checkOK(t, f.decrypt(t, items))
	f.sink.delayNanos.Store(int64(delay))
	start = time.Now()
	f.checkOK(t, f.decrypt(t, items))
	if took := time.Since(start); took >= delay {
		t.Fatalf("async mode did not resume after the audit log came back (hit took %s)", took)
	}
	f.reader.Flush(context.Background())
}
