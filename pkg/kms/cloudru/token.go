package cloudru

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/byok-io/byok/pkg/kms"
)

// defaultTokenLifetime is assumed when the IAM answer carries no usable expires_in.
const defaultTokenLifetime = time.Minute

// tokenSource exchanges the access key for a bearer token at Cloud.ru IAM, caches it until shortly
// before it expires, and lets one exchange run at a time (callers that arrive meanwhile wait for
// it, each bounded by its own context).
type tokenSource struct {
	http   *http.Client
	url    string // full URL of POST /api/v1/auth/token
	keyID  string
	secret string
	now    func() time.Time

	mu       sync.Mutex
	token    string
	refresh  time.Time // when to fetch a new one (a margin before expiry)
	inflight *tokenCall
}

type tokenCall struct {
	done  chan struct{}
	token string
	err   error
}

// String never prints the secret or the token.
func (ts *tokenSource) String() string { return "cloudru.tokenSource{key_id=" + ts.keyID + "}" }

// get returns a usable token. stale, when not empty, is a token the KMS just refused with 401:
// if it is still the cached one, a new token is fetched even though it has not expired yet.
func (ts *tokenSource) get(ctx context.Context, stale string) (string, error) {
	ts.mu.Lock()
	if ts.token != "" && ts.token != stale && ts.now().Before(ts.refresh) {
		tok := ts.token
		ts.mu.Unlock()
		return tok, nil
	}
	call := ts.inflight
	if call == nil {
		call = &tokenCall{done: make(chan struct{})}
		ts.inflight = call
		// The exchange must not die with the first caller's context: others wait on it too.
		// ts.http's own timeout bounds it.
		go ts.fetch(context.WithoutCancel(ctx), call)
	}
	ts.mu.Unlock()
	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		return "", fmt.Errorf("IAM token: %w: %w", kms.ErrUnavailable, ctx.Err())
	}
}

func (ts *tokenSource) fetch(ctx context.Context, call *tokenCall) {
	tok, lifetime, err := ts.exchange(ctx)
	ts.mu.Lock()
	if err == nil {
		ts.token = tok
		ts.refresh = ts.now().Add(lifetime - refreshMargin(lifetime))
	}
	ts.inflight = nil
	ts.mu.Unlock()
	call.token, call.err = tok, err
	close(call.done)
}

// redact removes the secret from a server-provided message, should IAM ever echo it.
func (ts *tokenSource) redact(msg string) string {
	if ts.secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, ts.secret, "<redacted>")
}

// refreshMargin is how long before expiry a token is replaced: a fifth of its life, at most a
// minute (so a one-hour token is used for 59 minutes).
func refreshMargin(lifetime time.Duration) time.Duration { return min(time.Minute, lifetime/5) }

// exchange performs POST /api/v1/auth/token {"keyId","secret"}.
func (ts *tokenSource) exchange(ctx context.Context) (string, time.Duration, error) {
	body, err := json.Marshal(struct {
		KeyID  string `json:"keyId"`
		Secret string `json:"secret"`
	}{ts.keyID, ts.secret})
	if err != nil {
		return "", 0, fmt.Errorf("IAM token: encoding request: %w", err)
	}
	defer clear(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url, bytes.NewReader(body))
	if err != nil {
		return "", 0, fmt.Errorf("IAM token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := ts.http.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("IAM token: %w: %w", kms.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	defer clear(raw) // it holds the token
	if err != nil {
		return "", 0, fmt.Errorf("IAM token: reading response: %w: %w", kms.ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return "", 0, fmt.Errorf("IAM token: HTTP %d%s: %w", resp.StatusCode, ts.redact(describeBody(raw)), kms.ErrUnavailable)
	default:
		// 400/401/403/404: IAM refused the access key (wrong id or secret, expired or deleted key,
		// blocked service account). Retrying will not help.
		return "", 0, fmt.Errorf("IAM token for key id %s: HTTP %d%s: %w", ts.keyID, resp.StatusCode, ts.redact(describeBody(raw)), kms.ErrAccessDenied)
	}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.AccessToken == "" {
		return "", 0, fmt.Errorf("IAM token: answer without access_token: %w", kms.ErrUnavailable)
	}
	lifetime := time.Duration(out.ExpiresIn) * time.Second
	if out.ExpiresIn <= 0 || out.ExpiresIn > 7*24*3600 {
		lifetime = defaultTokenLifetime
	}
	return out.AccessToken, lifetime, nil
}
