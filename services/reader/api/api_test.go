package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
)

// memSink records audit events; failing makes every write fail (audit down); delayNanos slows
// every write (a Kafka round trip).
type memSink struct {
	mu         sync.Mutex
	events     []*byokv1.AuditEvent
	failing    atomic.Bool
	delayNanos atomic.Int64
}

func (s *memSink) Write(_ context.Context, _, value []byte) error {
	time.Sleep(time.Duration(s.delayNanos.Load()))
	if s.failing.Load() {
		return errors.New("audit topic unreachable")
	}
	ev := &byokv1.AuditEvent{}
	if err := proto.Unmarshal(value, ev); err != nil {
		return err
	}
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	return nil
}

func (s *memSink) byOp() map[string][]*byokv1.AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string][]*byokv1.AuditEvent{}
	for _, ev := range s.events {
		m[ev.Operation+"/"+ev.Result] = append(m[ev.Operation+"/"+ev.Result], ev)
	}
	return m
}

type countingKMS struct {
	kms.KMS
	unwraps atomic.Int64
	deny    atomic.Bool
}

func (c *countingKMS) Unwrap(ctx context.Context, r []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	c.unwraps.Add(1)
	if c.deny.Load() {
		return nil, fmt.Errorf("test: token revoked: %w", kms.ErrAccessDenied)
	}
	return c.KMS.Unwrap(ctx, r)
}

type resolver map[string]*countingKMS

func (r resolver) KMSFor(t string) (kms.KMS, error) {
	if k, ok := r[t]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("tenant %s: %w", t, dek.ErrNoKMS)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	tokenCanary = "CANARY-TOKEN-reader-7f3a"
	bodyCanary  = "CANARY-BODY-reader-91c2"
)

type fixture struct {
	srv     *httptest.Server
	kms     resolver
	sink    *memSink
	clock   *clock
	cache   *deccache.Cache
	sealed  map[string][]DecryptItem // tenant → items
	bodies  map[string]string        // message id → body
	logs    *bytes.Buffer
	reader  *Reader
	manager *dek.Manager
}

func newFixture(t testing.TB, ttl time.Duration) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(path, "acme", "globex"); err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		kms:    resolver{"acme": {KMS: local.New(path, "acme")}, "globex": {KMS: local.New(path, "globex")}},
		sink:   &memSink{},
		clock:  &clock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)},
		sealed: map[string][]DecryptItem{},
		bodies: map[string]string{},
		logs:   &bytes.Buffer{},
	}
	var err error
	f.cache, err = deccache.New(deccache.Config{MaxTTL: ttl, Now: f.clock.Now, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cache.Close() })
	m := dek.New(f.kms, dek.Config{})
	t.Cleanup(func() { m.Close() })
	f.manager = m
	for _, tenant := range []string{"acme", "globex"} {
		for i := range 6 {
			k, err := m.Key(context.Background(), scope.Scope{TenantID: tenant, ChatID: fmt.Sprintf("chat-%d", i%3), Day: 20426})
			if err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("%s-m%d", tenant, i)
			body := fmt.Sprintf("%s %s привет %d", bodyCanary, tenant, i)
			env, err := k.Seal(id, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			f.bodies[id] = body
			f.sealed[tenant] = append(f.sealed[tenant], DecryptItem{MessageID: id, EnvelopeBase64: base64.StdEncoding.EncodeToString(env)})
		}
	}
	al := audit.NewLog(f.sink, "reader-test")
	f.reader = &Reader{Resolver: &audit.Resolver{Inner: f.kms, Log: al}, Log: al, Cache: f.cache}
	set, err := callers.Parse([]byte(fmt.Sprintf(`{"callers": {"render-svc": {"token_sha256": %q, "tenants": ["acme"]}}}`, callers.TokenSHA256(tokenCanary))))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(f.logs).Level(zerolog.DebugLevel)
	f.srv = httptest.NewServer(NewHandler(f.reader, set, log))
	t.Cleanup(f.srv.Close)
	return f
}

// post sends req with token and returns the status and raw body.
func (f *fixture) post(t testing.TB, token string, req any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/decrypt", bytes.NewReader(b))
	hr.Header.Set("Content-Type", "application/json")
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func (f *fixture) decrypt(t testing.TB, items []DecryptItem) DecryptResponse {
	t.Helper()
	status, body := f.post(t, tokenCanary, DecryptRequest{Actor: "render-svc", OnBehalfOf: "user-42", Purpose: "render", Items: items})
	if status != http.StatusOK {
		t.Fatalf("POST /v1/decrypt = %d %s, want 200", status, body)
	}
	var resp DecryptResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func (f *fixture) checkOK(t testing.TB, resp DecryptResponse) {
	t.Helper()
	for _, r := range resp.Results {
		b, _ := base64.StdEncoding.DecodeString(r.BodyBase64)
		if r.Error != "" || string(b) != f.bodies[r.MessageID] {
			t.Fatalf("result %s = %q, error %q; want its body", r.MessageID, b, r.Error)
		}
	}
}

func TestDecryptCachesAuditsAndAuthorizes(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
	if n := f.kms["acme"].unwraps.Load(); n != 1 {
		t.Fatalf("KMS unwrap calls for two reads = %d, want 1 (one batch, then the cache)", n)
	}

	// A tenant the caller may not read: refused per item, even though its DEK is cached, and audited.
	mixed := append([]DecryptItem{f.sealed["globex"][0]}, f.sealed["acme"][0])
	resp := f.decrypt(t, mixed)
	if resp.Results[0].Error != ReasonTenantNotAllowed || resp.Results[0].BodyBase64 != "" {
		t.Fatalf("globex item = %+v, want error %q", resp.Results[0], ReasonTenantNotAllowed)
	}
	f.checkOK(t, DecryptResponse{Results: resp.Results[1:]})
	if n := f.kms["globex"].unwraps.Load(); n != 0 {
		t.Fatalf("globex KMS called %d times for a refused caller, want 0", n)
	}

	ops := f.sink.byOp()
	check := func(key string, want int) []*byokv1.AuditEvent {
		t.Helper()
		if len(ops[key]) != want {
			t.Fatalf("audit events %s = %d, want %d (all: %v)", key, len(ops[key]), want, keys(ops))
		}
		return ops[key]
	}
	for _, ev := range check("unwrap/ok", 1) {
		if ev.ActorService != "render-svc" || ev.ActorUser != "user-42" || ev.Purpose != "render" || ev.DekCount != 3 {
			t.Fatalf("unwrap event = actor %s/%s purpose %s deks %d; want render-svc/user-42 render 3", ev.ActorService, ev.ActorUser, ev.Purpose, ev.DekCount)
		}
	}
	check(OpReadCached+"/ok", 2)
	ref := check("unwrap/denied", 1)[0]
	if ref.TenantId != "globex" || ref.ErrorCode != audit.CodePolicy || ref.ActorService != "render-svc" {
		t.Fatalf("refused event = tenant %s code %s actor %s; want globex policy render-svc", ref.TenantId, ref.ErrorCode, ref.ActorService)
	}
}

func keys(m map[string][]*byokv1.AuditEvent) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s×%d", k, len(v)))
	}
	return out
}

// TestNothingServedBeyondTTL: after the key owner revokes access, reads go on from the cache
// only until the TTL, then fail with the revocation reason.
func TestNothingServedBeyondTTL(t *testing.T) {
	const ttl = 2 * time.Second
	f := newFixture(t, ttl)
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
	f.kms["acme"].deny.Store(true) // KMS-level revocation
	f.clock.Add(ttl - time.Millisecond)
	f.checkOK(t, f.decrypt(t, f.sealed["acme"]))
	f.clock.Add(time.Millisecond)
	for _, r := range f.decrypt(t, f.sealed["acme"]).Results {
		if r.Error != ReasonRevoked || r.BodyBase64 != "" {
			t.Fatalf("read at TTL after revocation = %+v, want error %q", r, ReasonRevoked)
		}
	}
}

// TestDenialDropsTenantCache: once the KMS denies one of a tenant's DEKs, no cached DEK of that
// tenant serves another read, even within the TTL.
func TestDenialDropsTenantCache(t *testing.T) {
	f := newFixture(t, time.Minute)
	items := f.sealed["acme"]
	f.checkOK(t, f.decrypt(t, items[:1])) // chat-0 cached
	f.kms["acme"].deny.Store(true)
	resp := f.decrypt(t, items[1:2]) // chat-1: a miss, denied
	if resp.Results[0].Error != ReasonRevoked {
		t.Fatalf("miss after revocation = %+v, want %q", resp.Results[0], ReasonRevoked)
	}
	if r := f.decrypt(t, items[:1]).Results[0]; r.Error != ReasonRevoked {
		t.Fatalf("cached chat-0 after a denial = %+v, want %q", r, ReasonRevoked)
	}
}

// TestFailClosedWithoutAudit: with the audit topic down, no DEK is used — neither a fresh unwrap
// nor a cached one.
func TestFailClosedWithoutAudit(t *testing.T) {
	f := newFixture(t, time.Minute)
	items := f.sealed["acme"]
	f.checkOK(t, f.decrypt(t, items[:1]))
	f.sink.failing.Store(true)
	for _, r := range f.decrypt(t, items).Results {
		if r.Error != ReasonAuditUnavailable || r.BodyBase64 != "" {
			t.Fatalf("read with audit down = %+v, want error %q", r, ReasonAuditUnavailable)
		}
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, time.Minute)
	items := f.sealed["acme"][:1]
	many := make([]DecryptItem, MaxItems+1)
	for i := range many {
		many[i] = items[0]
	}
	for _, tc := range []struct {
		name   string
		token  string
		req    any
		status int
		reason string
	}{
		{"no token", "", DecryptRequest{Actor: "render-svc", Purpose: "render", Items: items}, 401, "missing or invalid bearer token"},
		{"wrong token", tokenCanary + "x", DecryptRequest{Actor: "render-svc", Purpose: "render", Items: items}, 401, "missing or invalid bearer token"},
		{"no actor", tokenCanary, DecryptRequest{Purpose: "render", Items: items}, 400, "actor is required"},
		{"no purpose", tokenCanary, DecryptRequest{Actor: "render-svc", Items: items}, 400, "purpose is required"},
		{"other actor", tokenCanary, DecryptRequest{Actor: "export-svc", Purpose: "render", Items: items}, 403, "actor does not match"},
		{"no items", tokenCanary, DecryptRequest{Actor: "render-svc", Purpose: "render"}, 400, "items is empty"},
		{"too many", tokenCanary, DecryptRequest{Actor: "render-svc", Purpose: "render", Items: many}, 400, "at most 1000"},
		{"bad base64", tokenCanary, DecryptRequest{Actor: "render-svc", Purpose: "render", Items: []DecryptItem{{MessageID: "m", EnvelopeBase64: "%%" + bodyCanary}}}, 400, "items[0].envelope_base64"},
		{"no message id", tokenCanary, DecryptRequest{Actor: "render-svc", Purpose: "render", Items: []DecryptItem{{EnvelopeBase64: items[0].EnvelopeBase64}}}, 400, "items[0].message_id"},
		{"not JSON", tokenCanary, json.RawMessage(`{"actor": "` + bodyCanary + `", "items": 7}`), 400, "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.post(t, tc.token, tc.req)
			if status != tc.status || !strings.Contains(string(body), tc.reason) {
				t.Fatalf("POST = %d %s, want %d with %q", status, body, tc.status, tc.reason)
			}
			if strings.Contains(string(body), "CANARY") {
				t.Fatalf("error response quotes a canary: %s", body)
			}
		})
	}
	// Per-item failures: a garbage envelope and an envelope claimed by another message id.
	resp := f.decrypt(t, []DecryptItem{
		{MessageID: "x", EnvelopeBase64: base64.StdEncoding.EncodeToString([]byte(bodyCanary))},
		{MessageID: "acme-m5", EnvelopeBase64: items[0].EnvelopeBase64},
	})
	if resp.Results[0].Error != ReasonMalformed || resp.Results[1].Error != ReasonDoesNotOpen {
		t.Fatalf("results = %+v, want %q and %q", resp.Results, ReasonMalformed, ReasonDoesNotOpen)
	}
}

// TestCanariesStayOut: bodies and tokens never appear in logs or error responses, at debug level,
// across successes, refusals, revocations and bad requests.
func TestCanariesStayOut(t *testing.T) {
	f := newFixture(t, time.Minute)
	var responses bytes.Buffer
	f.decrypt(t, append(f.sealed["acme"], f.sealed["globex"]...))
	f.kms["acme"].deny.Store(true)
	f.cache.DropTenant("acme")
	for _, r := range f.decrypt(t, f.sealed["acme"]).Results {
		responses.WriteString(r.Error)
	}
	_, b := f.post(t, tokenCanary+"-wrong", DecryptRequest{Actor: "render-svc", Purpose: "render", Items: f.sealed["acme"]})
	responses.Write(b)
	_, b = f.post(t, tokenCanary, DecryptRequest{Actor: "render-svc", Purpose: "render", Items: []DecryptItem{{MessageID: bodyCanary, EnvelopeBase64: "!"}}})
	responses.Write(b)
	for name, out := range map[string]string{"logs": f.logs.String(), "error responses": responses.String()} {
		for _, canary := range []string{tokenCanary, bodyCanary, callers.TokenSHA256(tokenCanary)} {
			if strings.Contains(out, canary) {
				t.Errorf("%s contain canary %q", name, canary)
			}
		}
	}
	if f.logs.Len() == 0 {
		t.Fatal("no log lines captured: the scan proves nothing")
	}
}
