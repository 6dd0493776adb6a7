package cloudru

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestTokenSourceStaleRefresh pins the rule that keeps a burst of 401s to one refresh: a caller
// that reports a token as stale after another caller already replaced it gets the new token, not
// a second exchange.
func TestTokenSourceStaleRefresh(t *testing.T) {
	var calls atomic.Int64
	iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		fmt.Fprintf(w, `{"access_token":"tok-%d","expires_in":3600,"token_type":"Bearer"}`, n)
	}))
	defer iam.Close()
	ts := &tokenSource{http: iam.Client(), url: iam.URL, keyID: "ak", secret: "s", now: time.Now}
	ctx := context.Background()

	get := func(stale, want string, wantCalls int64) {
		t.Helper()
		got, err := ts.get(ctx, stale)
		if err != nil || got != want || calls.Load() != wantCalls {
			t.Fatalf("get(stale=%q) = %q, %v after %d exchanges; want %q after %d", stale, got, err, calls.Load(), want, wantCalls)
		}
	}
	get("", "tok-1", 1)      // first exchange
	get("", "tok-1", 1)      // cached
	get("tok-1", "tok-2", 2) // the KMS refused tok-1: refresh
	get("tok-1", "tok-2", 2) // a late 401 for tok-1: tok-2 is already there
	get("", "tok-2", 2)
}

func TestTokenSourceExpiresInFallback(t *testing.T) {
	for _, tc := range []struct {
		body string
		want time.Duration
	}{
		{`{"access_token":"t","expires_in":3600}`, time.Hour - time.Minute},
		{`{"access_token":"t","expires_in":10}`, 8 * time.Second},
		{`{"access_token":"t"}`, defaultTokenLifetime - refreshMargin(defaultTokenLifetime)},
		{`{"access_token":"t","expires_in":-5}`, defaultTokenLifetime - refreshMargin(defaultTokenLifetime)},
	} {
		iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tc.body) }))
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		ts := &tokenSource{http: iam.Client(), url: iam.URL, keyID: "ak", secret: "s", now: func() time.Time { return now }}
		if _, err := ts.get(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		if got := ts.refresh.Sub(now); got != tc.want {
			t.Errorf("%s: token used for %v, want %v", tc.body, got, tc.want)
		}
		iam.Close()
	}
}
