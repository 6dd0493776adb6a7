package audit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// batchSink is a BatchSink over memSink with a delay per round trip and planted failures:
// failAt(call, index) decides whether value index of the call-th WriteBatch fails.
type batchSink struct {
	memSink
	delay  time.Duration
	calls  atomic.Int64
	failAt func(call int64, index int) bool
}

func (b *batchSink) WriteBatch(ctx context.Context, key []byte, values [][]byte) ([]error, error) {
	call := b.calls.Add(1)
	time.Sleep(b.delay)
	errs := make([]error, len(values))
	for i, v := range values {
		if b.failAt != nil && b.failAt(call, i) {
			errs[i] = errors.New("partition leader moved")
			continue
		}
		errs[i] = b.Write(ctx, key, v)
	}
	return errs, nil
}

func emitMany(t *testing.T, log *Log, n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: "acme", Operation: OpUnwrap, Result: ResultOK})
		})
	}
	wg.Wait()
	return errs
}

func intact(t *testing.T, evs []*byokv1.AuditEvent, want int) {
	t.Helper()
	r := Verify(evs)
	if len(r) != 1 || r[0].Problem != "" || r[0].Events != want {
		t.Fatalf("Verify = %+v, want one intact chain of %d events", r, want)
	}
}

// TestGroupCommit: concurrent events of one tenant share round trips, and the chain stays intact.
func TestGroupCommit(t *testing.T) {
	sink := &batchSink{delay: 5 * time.Millisecond}
	for i, err := range emitMany(t, NewLog(sink, "w1"), 200) {
		if err != nil {
			t.Fatalf("Emit %d: %v", i, err)
		}
	}
	intact(t, sink.all(), 200)
	if n := sink.calls.Load(); n > 50 {
		t.Fatalf("200 concurrent events took %d round trips, want them grouped (≤ 50)", n)
	}
	t.Logf("200 concurrent events in %d round trips", sink.calls.Load())

	// A plain Sink (no batches) gets the same guarantees, one event per round trip.
	plain := &memSink{}
	for _, err := range emitMany(t, NewLog(plain, "w1"), 50) {
		if err != nil {
			t.Fatal(err)
		}
	}
	intact(t, plain.all(), 50)
}

// TestGroupPartialFailureIsRetried: an event that failed while others of its group were stored
// is written again; every caller succeeds and the chain has no gap.
func TestGroupPartialFailureIsRetried(t *testing.T) {
	var planted atomic.Bool // the second event of the first group of two or more fails, once
	sink := &batchSink{delay: 2 * time.Millisecond, failAt: func(_ int64, i int) bool { return i == 1 && planted.CompareAndSwap(false, true) }}
	for i, err := range emitMany(t, NewLog(sink, "w1"), 100) {
		if err != nil {
			t.Fatalf("Emit %d: %v", i, err)
		}
	}
	if !planted.Load() {
		t.Fatal("no group of two or more events: the failure was never planted")
	}
	intact(t, sink.all(), 100)
}

// TestGroupFailures: an event that cannot be written is reported not recorded (its key must not
// be used). When its whole group fails the chain does not advance; when it alone keeps failing
// after later events were stored, the chain goes on from them and Verify shows the gap.
func TestGroupFailures(t *testing.T) {
	sink := &batchSink{}
	log := NewLog(sink, "w1")
	sink.memSink.fail = true
	if err := log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: "acme"}); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Emit with the sink down = %v, want ErrNotRecorded", err)
	}
	sink.memSink.fail = false
	for range 3 {
		if err := log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	intact(t, sink.all(), 3) // the failed event took no seq

	// Index 0 of every later call fails: a group of ≥ 2 events stores the rest around a hole.
	sink.failAt = func(_ int64, i int) bool { return i == 0 }
	sink.delay = 5 * time.Millisecond
	errs := emitMany(t, log, 20)
	var failed int
	for _, err := range errs {
		if err != nil {
			failed++
			if !errors.Is(err, ErrNotRecorded) {
				t.Fatalf("failed Emit err = %v, want ErrNotRecorded", err)
			}
		}
	}
	if failed == 0 || len(sink.all()) != 3+20-failed {
		t.Fatalf("%d of 20 failed and %d events stored; want some failed and every other one stored", failed, len(sink.all())-3)
	}
	if r := Verify(sink.all()); len(r) != 1 || !strings.Contains(r[0].Problem, "missing event") {
		t.Fatalf("Verify = %+v, want the gap of the never-written event reported", r)
	}
}

// TestEmitGivesUpWithItsContext: a caller whose context ends before its event is written gets
// ErrNotRecorded; an event whose caller is gone before its group is formed is never chained.
func TestEmitGivesUpWithItsContext(t *testing.T) {
	sink := &batchSink{delay: 50 * time.Millisecond}
	log := NewLog(sink, "w1")
	go log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: "acme"}) // occupies the writer
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := log.Emit(ctx, &byokv1.AuditEvent{TenantId: "acme"}); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Emit past its deadline = %v, want ErrNotRecorded", err)
	}
	if err := log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: "acme"}); err != nil {
		t.Fatal(err)
	}
	intact(t, sink.all(), 2)
}
