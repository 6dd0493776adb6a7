package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
)

// TestObserverSeesEveryCall checks the metrics hook: each call (made, denied, refused, or not
// recorded) is reported once with its provider, operation, result and DEK count.
func TestObserverSeesEveryCall(t *testing.T) {
	path, sink, log := fixture(t)
	var mu sync.Mutex
	var seen []string
	observe := func(provider, op, result string, deks int, latency time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if latency < 0 {
			t.Errorf("observer latency = %v, want >= 0", latency)
		}
		seen = append(seen, fmt.Sprintf("%s/%s/%s/%d", provider, op, result, deks))
	}
	r := &Resolver{Inner: staticResolver{"acme": local.New(path, "kek-acme"), "off": local.New(path, "kek-off")}, Log: log, Observe: observe}
	ctx := context.Background()
	acme, err := r.KMSFor("acme")
	if err != nil {
		t.Fatal(err)
	}
	off, _ := r.KMSFor("off")
	acme.Wrap(ctx, wrapReqs("a", "b", "c"))
	off.Wrap(ctx, wrapReqs("a"))
	acme.(*KMS).Refused(ctx, OpUnwrap, CodeScopeRevoked, [][]byte{wrapReqs("a")[0].Context})
	sink.mu.Lock()
	sink.fail = true
	sink.mu.Unlock()
	acme.Wrap(ctx, wrapReqs("d"))

	want := []string{"local/wrap/ok/3", "local/wrap/denied/1", "local/unwrap/denied/1", "local/wrap/not_recorded/1"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("observer saw %v, want %v", seen, want)
	}
	// Without an observer nothing changes.
	if _, err := Wrap(local.New(path, "kek-acme"), "acme", NewLog(&memSink{}, "w"), Access{}).Wrap(ctx, wrapReqs("x")); err != nil {
		t.Errorf("Wrap() without observer err = %v, want nil", err)
	}
}

type staticResolver map[string]kms.KMS

func (s staticResolver) KMSFor(tenantID string) (kms.KMS, error) {
	k, ok := s[tenantID]
	if !ok {
		return nil, kms.ErrKeyNotFound
	}
	return k, nil
}
