package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/services/ingest/api"
)

// fakePublisher records what it is asked to publish, or fails with err.
type fakePublisher struct {
	mu     sync.Mutex
	calls  [][]*byokv1.MessageEvent
	err    error
	events int
}

func (f *fakePublisher) Publish(_ context.Context, events ...*byokv1.MessageEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, events)
	f.events += len(events)
	return nil
}

func (f *fakePublisher) published() []*byokv1.MessageEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []*byokv1.MessageEvent
	for _, c := range f.calls {
		all = append(all, c...)
	}
	return all
}

func do(t *testing.T, h http.Handler, method, path, contentType, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e api.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error response %q: err = %v, want an ErrorResponse JSON", rec.Body.String(), err)
	}
	return e.Error
}

const jsonCT = "application/json"

func TestPostMessageAccepted(t *testing.T) {
	binary := []byte{0xff, 0x00, 0xfe}
	tests := []struct {
		name string
		body string
		want func(t *testing.T, e *byokv1.MessageEvent, id string)
	}{
		{
			name: "minimal: id, created_at and content_type generated",
			body: `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1","body":"héllo"}`,
			want: func(t *testing.T, e *byokv1.MessageEvent, id string) {
				if e.MessageId == "" || e.MessageId != id {
					t.Errorf("message_id = %q, response id %q, want the same generated id", e.MessageId, id)
				}
				if e.ContentType != api.DefaultContentType {
					t.Errorf("content_type = %q, want %q", e.ContentType, api.DefaultContentType)
				}
				if age := time.Since(e.CreatedAt.AsTime()); age < 0 || age > time.Minute {
					t.Errorf("created_at = %v, want about now", e.CreatedAt.AsTime())
				}
				if string(e.Body) != "héllo" || e.TenantId != "acme" || e.ChatId != "general" || e.SenderId != "u-1" {
					t.Errorf("event = %v, want the posted fields", e)
				}
			},
		},
		{
			name: "all fields given",
			body: `{"tenant_id":"acme","chat_id":"general","message_id":"m-1","sender_id":"u-1",` +
				`"created_at":"2026-12-04T10:00:00.5+03:00","content_type":"text/markdown","body":"*hi*"}`,
			want: func(t *testing.T, e *byokv1.MessageEvent, id string) {
				if e.MessageId != "m-1" || id != "m-1" {
					t.Errorf("message_id = %q, response %q, want m-1", e.MessageId, id)
				}
				want := time.Date(2026, 12, 4, 7, 0, 0, 500e6, time.UTC)
				if !e.CreatedAt.AsTime().Equal(want) {
					t.Errorf("created_at = %v, want %v", e.CreatedAt.AsTime(), want)
				}
				if e.ContentType != "text/markdown" || string(e.Body) != "*hi*" {
					t.Errorf("event = %v, want content_type text/markdown and body *hi*", e)
				}
			},
		},
		{
			name: "binary body in base64, charset parameter",
			body: `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1","body_base64":"` +
				base64.StdEncoding.EncodeToString(binary) + `"}`,
			want: func(t *testing.T, e *byokv1.MessageEvent, _ string) {
				if !bytes.Equal(e.Body, binary) {
					t.Errorf("body = %x, want %x", e.Body, binary)
				}
			},
		},
		{
			name: "empty body is a body",
			body: `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1","body":""}`,
			want: func(t *testing.T, e *byokv1.MessageEvent, _ string) {
				if len(e.Body) != 0 {
					t.Errorf("body = %q, want empty", e.Body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			rec := do(t, api.NewHandler(pub, zerolog.Nop()), http.MethodPost, "/v1/messages", "application/json; charset=utf-8", tt.body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("POST /v1/messages status = %d (%s), want 202", rec.Code, rec.Body)
			}
			var resp api.MessageResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response %q: err = %v, want MessageResponse", rec.Body, err)
			}
			got := pub.published()
			if len(got) != 1 {
				t.Fatalf("published %d events, want 1", len(got))
			}
			if err := message.Validate(got[0]); err != nil {
				t.Errorf("published event: Validate() err = %v, want nil", err)
			}
			tt.want(t, got[0], resp.MessageID)
		})
	}
}

func TestPostBatchAccepted(t *testing.T) {
	pub := &fakePublisher{}
	body := `{"messages":[
		{"tenant_id":"t1","chat_id":"c1","sender_id":"u","body":"one"},
		{"tenant_id":"t2","chat_id":"c2","sender_id":"u","body":"two","message_id":"given"},
		{"tenant_id":"t1","chat_id":"c3","sender_id":"u","body_base64":"dGhyZWU="}]}`
	rec := do(t, api.NewHandler(pub, zerolog.Nop()), http.MethodPost, "/v1/messages:batch", jsonCT, body)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST /v1/messages:batch status = %d (%s), want 202", rec.Code, rec.Body)
	}
	var resp api.BatchResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("response %q: err = %v, want BatchResponse", rec.Body, err)
	}
	if len(pub.calls) != 1 {
		t.Fatalf("Publish called %d times, want once for the whole batch", len(pub.calls))
	}
	got := pub.published()
	wantBodies := []string{"one", "two", "three"}
	if len(got) != 3 || len(resp.MessageIDs) != 3 {
		t.Fatalf("published %d events, answered %d ids, want 3 and 3", len(got), len(resp.MessageIDs))
	}
	for i, e := range got {
		if string(e.Body) != wantBodies[i] || e.MessageId != resp.MessageIDs[i] {
			t.Errorf("event %d = body %q id %q, want body %q id %q", i, e.Body, e.MessageId, wantBodies[i], resp.MessageIDs[i])
		}
	}
	if resp.MessageIDs[1] != "given" {
		t.Errorf("message_ids[1] = %q, want the given id", resp.MessageIDs[1])
	}
}

func TestRejected(t *testing.T) {
	item := func(fields string) string {
		return `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1"` + fields + `}`
	}
	valid := item(`,"body":"hi"`)
	batch := func(items ...string) string { return `{"messages":[` + strings.Join(items, ",") + `]}` }
	many := make([]string, api.MaxBatchMessages+1)
	for i := range many {
		many[i] = valid
	}
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
		wantReason  string
	}{
		{"not JSON", "POST", "/v1/messages", jsonCT, `{"tenant_id":`, 400, "not valid JSON"},
		{"syntax error", "POST", "/v1/messages", jsonCT, `{"tenant_id" "acme"}`, 400, "not valid JSON"},
		{"empty request", "POST", "/v1/messages", jsonCT, ``, 400, "empty"},
		{"not an object", "POST", "/v1/messages", jsonCT, `[1,2]`, 400, "JSON object"},
		{"trailing data", "POST", "/v1/messages", jsonCT, valid + `{}`, 400, "after the JSON value"},
		{"unknown field", "POST", "/v1/messages", jsonCT, item(`,"body":"hi","bodyy":"x"`), 400, `unknown field "bodyy"`},
		{"wrong type", "POST", "/v1/messages", jsonCT, `{"tenant_id":5}`, 400, "tenant_id must be a JSON string"},
		{"missing tenant_id", "POST", "/v1/messages", jsonCT, `{"chat_id":"c","sender_id":"u","body":"x"}`, 400, "tenant_id is required"},
		{"missing chat_id", "POST", "/v1/messages", jsonCT, `{"tenant_id":"t","sender_id":"u","body":"x"}`, 400, "chat_id is required"},
		{"missing sender_id", "POST", "/v1/messages", jsonCT, `{"tenant_id":"t","chat_id":"c","body":"x"}`, 400, "sender_id is required"},
		{"missing body", "POST", "/v1/messages", jsonCT, item(``), 400, "body or body_base64 is required"},
		{"both bodies", "POST", "/v1/messages", jsonCT, item(`,"body":"a","body_base64":"YQ=="`), 400, "both set"},
		{"invalid base64", "POST", "/v1/messages", jsonCT, item(`,"body_base64":"not base64!"`), 400, "body_base64 is not valid"},
		{"bad created_at", "POST", "/v1/messages", jsonCT, item(`,"body":"a","created_at":"yesterday"`), 400, "created_at"},
		{"created_at out of range", "POST", "/v1/messages", jsonCT, item(`,"body":"a","created_at":"1970-01-01T00:00:00Z"`), 400, "created_at year"},
		{"control char in message_id", "POST", "/v1/messages", jsonCT, item(`,"body":"a","message_id":"a\u0001b"`), 400, "message_id contains a control character"},
		{"long chat_id", "POST", "/v1/messages", jsonCT, `{"tenant_id":"t","sender_id":"u","body":"x","chat_id":"` + strings.Repeat("c", 300) + `"}`, 400, "chat_id is longer"},
		{"body over 1 MiB", "POST", "/v1/messages", jsonCT, item(`,"body":"` + strings.Repeat("a", message.MaxBodyLen+1) + `"`), 400, "body of"},
		{"request over the limit", "POST", "/v1/messages", jsonCT, item(`,"body":"` + strings.Repeat("a", api.MaxRequestBytes) + `"`), 413, "larger than"},
		{"text/plain", "POST", "/v1/messages", "text/plain", valid, 415, "application/json"},
		{"no content type", "POST", "/v1/messages", "", valid, 415, "application/json"},
		{"GET", "GET", "/v1/messages", jsonCT, "", 405, "GET is not allowed"},
		{"PUT", "PUT", "/v1/messages", jsonCT, valid, 405, "PUT is not allowed"},
		{"batch: empty", "POST", "/v1/messages:batch", jsonCT, batch(), 400, "messages is required"},
		{"batch: no messages field", "POST", "/v1/messages:batch", jsonCT, `{}`, 400, "messages is required"},
		{"batch: messages not an array", "POST", "/v1/messages:batch", jsonCT, `{"messages":"x"}`, 400, "messages must be a JSON array"},
		{"batch: too many", "POST", "/v1/messages:batch", jsonCT, batch(many...), 400, "1001 items"},
		{"batch: invalid item", "POST", "/v1/messages:batch", jsonCT, batch(valid, valid, `{"chat_id":"c","sender_id":"u","body":"x"}`), 400, "messages[2]: invalid message event: tenant_id is required"},
		{"batch: unknown field in item", "POST", "/v1/messages:batch", jsonCT, batch(valid, item(`,"body":"a","x":1`)), 400, `messages[1]: unknown field "x"`},
		{"batch: item not an object", "POST", "/v1/messages:batch", jsonCT, batch(valid, `"hi"`), 400, "messages[1]: request must be a JSON object"},
		{"batch: both bodies", "POST", "/v1/messages:batch", jsonCT, batch(item(`,"body":"a","body_base64":"YQ=="`)), 400, "messages[0]: body and body_base64"},
		{"batch: over the limit", "POST", "/v1/messages:batch", jsonCT, batch(item(`,"body":"` + strings.Repeat("a", api.MaxBatchRequestBytes) + `"`)), 413, "larger than"},
		{"batch: GET", "GET", "/v1/messages:batch", jsonCT, "", 405, "not allowed"},
		{"batch: form", "POST", "/v1/messages:batch", "application/x-www-form-urlencoded", batch(valid), 415, "application/json"},
		{"healthz: POST", "POST", "/healthz", jsonCT, "", 405, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			rec := do(t, api.NewHandler(pub, zerolog.Nop()), tt.method, tt.path, tt.contentType, tt.body)
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s status = %d (%s), want %d", tt.method, tt.path, rec.Code, rec.Body, tt.wantStatus)
			}
			if got := errorOf(t, rec); !strings.Contains(got, tt.wantReason) {
				t.Errorf("%s %s error = %q, want it to contain %q", tt.method, tt.path, got, tt.wantReason)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if n := len(pub.published()); n != 0 {
				t.Errorf("published %d events, want none", n)
			}
		})
	}
}

func TestPublishFailureIs503WithoutInternals(t *testing.T) {
	for _, path := range []string{"/v1/messages", "/v1/messages:batch"} {
		t.Run(path, func(t *testing.T) {
			pub := &fakePublisher{err: errors.New("kafka: broker kafka-7.internal:9092: NOT_ENOUGH_REPLICAS")}
			body := `{"tenant_id":"t","chat_id":"c","sender_id":"u","body":"x"}`
			if path == "/v1/messages:batch" {
				body = `{"messages":[` + body + `]}`
			}
			rec := do(t, api.NewHandler(pub, zerolog.Nop()), http.MethodPost, path, jsonCT, body)
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("POST %s status = %d, want 503", path, rec.Code)
			}
			if got := strings.TrimSpace(rec.Body.String()); got != `{"error":"could not publish, retry"}` {
				t.Errorf("POST %s body = %s, want the fixed retry message", path, got)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	rec := do(t, api.NewHandler(&fakePublisher{}, zerolog.Nop()), http.MethodGet, "/healthz", "", "")
	if rec.Code != http.StatusOK || rec.Body.String() != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\"", rec.Code, rec.Body)
	}
}

// TestBodiesNeverInLogsOrErrors plants a canary in the body of valid and invalid requests and
// checks it appears in no log line and no response (INVARIANTS 1).
func TestBodiesNeverInLogsOrErrors(t *testing.T) {
	const canary = "CANARY-3b9c1e-plaintext"
	b64 := base64.StdEncoding.EncodeToString([]byte(canary))
	msg := func(extra string) string {
		return `{"tenant_id":"acme","chat_id":"general","sender_id":"u-1"` + extra + `}`
	}
	requests := []struct {
		name, path, contentType, body string
		pubErr                        error
	}{
		{"valid", "/v1/messages", jsonCT, msg(`,"body":"` + canary + `"`), nil},
		{"valid base64", "/v1/messages", jsonCT, msg(`,"body_base64":"` + b64 + `"`), nil},
		{"valid batch", "/v1/messages:batch", jsonCT, `{"messages":[` + msg(`,"body":"`+canary+`"`) + `]}`, nil},
		{"publish fails", "/v1/messages", jsonCT, msg(`,"body":"` + canary + `"`), errors.New("kafka down")},
		{"missing tenant", "/v1/messages", jsonCT, `{"chat_id":"c","sender_id":"u","body":"` + canary + `"}`, nil},
		{"both bodies", "/v1/messages", jsonCT, msg(`,"body":"` + canary + `","body_base64":"` + b64 + `"`), nil},
		{"body too large", "/v1/messages", jsonCT, msg(`,"body":"` + canary + strings.Repeat("x", message.MaxBodyLen) + `"`), nil},
		{"request too large", "/v1/messages", jsonCT, msg(`,"body":"` + canary + strings.Repeat("x", api.MaxRequestBytes) + `"`), nil},
		{"truncated JSON", "/v1/messages", jsonCT, `{"body":"` + canary + `","tenant_id":"t`, nil},
		{"syntax error after body", "/v1/messages", jsonCT, `{"body":"` + canary + `" "tenant_id":"t"}`, nil},
		{"body of the wrong type", "/v1/messages", jsonCT, msg(`,"body":["` + canary + `"]`), nil},
		{"unknown field", "/v1/messages", jsonCT, msg(`,"body":"` + canary + `","extra":"` + canary + `"`), nil},
		{"wrong content type", "/v1/messages", "text/plain", msg(`,"body":"` + canary + `"`), nil},
		{"invalid batch item", "/v1/messages:batch", jsonCT, `{"messages":[` + msg(`,"body":"`+canary+`"`) + `,{"body":"` + canary + `"}]}`, nil},
	}
	var logs bytes.Buffer
	log := logging.New("ingest", "debug", &logs)
	for _, r := range requests {
		t.Run(r.name, func(t *testing.T) {
			pub := &fakePublisher{err: r.pubErr}
			rec := do(t, api.NewHandler(pub, log), http.MethodPost, r.path, r.contentType, r.body)
			for _, form := range []string{canary, b64} {
				if strings.Contains(rec.Body.String(), form) {
					t.Errorf("response %d quotes the body: %.200s", rec.Code, rec.Body)
				}
			}
			if rec.Code == http.StatusAccepted {
				// The canary did reach the publisher: the check above looked at a real body.
				if got := pub.published(); len(got) == 0 || !strings.Contains(string(got[0].Body), canary) {
					t.Errorf("published %v, want the canary body", got)
				}
			}
		})
	}
	if logs.Len() == 0 {
		t.Fatal("no log output captured, want request logs to scan")
	}
	for _, form := range []string{canary, b64} {
		if strings.Contains(logs.String(), form) {
			t.Errorf("logs contain the body (%q):\n%s", form, logs.String())
		}
	}
}

// blockingPublisher holds every Publish until release is closed.
type blockingPublisher struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingPublisher) Publish(ctx context.Context, _ ...*byokv1.MessageEvent) error {
	close(b.started)
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestServeDrainsInFlightRequests(t *testing.T) {
	pub := &blockingPublisher{started: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(nil) // only for its listener
	ln := srv.Listener
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- api.Serve(ctx, ln, api.NewHandler(pub, zerolog.Nop()), zerolog.Nop()) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz err = %v, want nil", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz status = %d, want 200", resp.StatusCode)
	}

	answered := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/v1/messages", jsonCT,
			strings.NewReader(`{"tenant_id":"t","chat_id":"c","sender_id":"u","body":"x"}`))
		if err != nil {
			answered <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-pub.started
	cancel() // shutdown begins while the publish is in flight
	select {
	case err := <-served:
		t.Fatalf("Serve() returned %v before the in-flight request finished", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(pub.release)
	if code := <-answered; code != http.StatusAccepted {
		t.Errorf("in-flight POST status = %d, want 202", code)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve() err = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve() did not return after shutdown")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Errorf("GET /healthz after shutdown err = nil, want connection refused")
	}
}

func ExampleNewHandler() {
	h := api.NewHandler(&fakePublisher{}, zerolog.Nop())
	req := httptest.NewRequest(http.MethodPost, "/v1/messages",
		strings.NewReader(`{"tenant_id":"acme","chat_id":"general","message_id":"m-1","sender_id":"u-1","body":"hi"}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body)
	// Output: 202 {"message_id":"m-1"}
}
