package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/settings"
)

// Canaries: none may appear in a log line, a response or an audit event.
const (
	credCanary   = "CANARY-CRED-settings-3b9f"
	aliceToken   = "CANARY-TOKEN-alice-77e1"
	bobToken     = "CANARY-TOKEN-bob-0c4d"
	workerID     = "settings-test"
	kekAcme      = "acme-kek"
	kekGlobex    = "globex-kek"
	kekDisabled  = "disabled-kek"
	testAdmins   = `{"callers": {"alice": {"token_sha256": %q, "tenants": ["globex", "acme"]}, "bob": {"token_sha256": %q, "tenants": ["initech"]}}}`
	jsonType     = "application/json"
	settingsPath = "/v1/tenants/acme/settings"
)

// memSink records audit events; failing makes every write fail (audit down).
type memSink struct {
	mu      sync.Mutex
	raw     [][]byte
	events  []*byokv1.AuditEvent
	failing atomic.Bool
}

func (s *memSink) Write(_ context.Context, _, value []byte) error {
	if s.failing.Load() {
		return errors.New("audit topic unreachable")
	}
	ev := &byokv1.AuditEvent{}
	if err := proto.Unmarshal(value, ev); err != nil {
		return err
	}
	s.mu.Lock()
	s.raw = append(s.raw, bytes.Clone(value))
	s.events = append(s.events, ev)
	s.mu.Unlock()
	return nil
}

func (s *memSink) all() []*byokv1.AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*byokv1.AuditEvent(nil), s.events...)
}

// ops lists the events as "operation/purpose/result" in order.
func (s *memSink) ops() []string {
	var out []string
	for _, ev := range s.all() {
		out = append(out, ev.Operation+"/"+ev.Purpose+"/"+ev.Result)
	}
	return out
}

// failingStore is a MemStore whose writes can be made to fail (Kafka down).
type failingStore struct {
	*MemStore
	failing atomic.Bool
}

var errStoreDown = errors.New("control topic: not enough in-sync replicas")

func (f *failingStore) PutSettings(ctx context.Context, ts *byokv1.TenantSettings) error {
	if f.failing.Load() {
		return errStoreDown
	}
	return f.MemStore.PutSettings(ctx, ts)
}

func (f *failingStore) Revoke(ctx context.Context, r *byokv1.Revocation) error {
	if f.failing.Load() {
		return errStoreDown
	}
	return f.MemStore.Revoke(ctx, r)
}

func (f *failingStore) Unrevoke(ctx context.Context, t, id string) error {
	if f.failing.Load() {
		return errStoreDown
	}
	return f.MemStore.Unrevoke(ctx, t, id)
}

type fixture struct {
	srv     *httptest.Server
	store   *failingStore
	sink    *memSink
	key     *settings.Key
	logs    *syncBuffer
	keyFile string
	// bodies collects every response body the server sent (page, assets, API), scanned for
	// canaries at the end; requests names them.
	mu       sync.Mutex
	bodies   [][]byte
	requests []string
	opens    atomic.Int64
}

// teeWriter keeps a copy of a response body.
type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixtureOpt func(*Config, *server)

func newFixture(t testing.TB, opts ...fixtureOpt) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{store: &failingStore{MemStore: NewMemStore()}, sink: &memSink{}, logs: &syncBuffer{},
		keyFile: filepath.Join(dir, "kms-keys.json")}
	if err := local.WriteKeyFile(f.keyFile, kekAcme, kekGlobex, kekDisabled); err != nil {
		t.Fatal(err)
	}
	setKeyDisabled(t, f.keyFile, kekDisabled)
	var err error
	if f.key, err = settings.GenerateKeyFile(filepath.Join(dir, "settings.key")); err != nil {
		t.Fatal(err)
	}
	admins, err := ParseAdmins(fmt.Appendf(nil, testAdmins, callers.TokenSHA256(aliceToken), callers.TokenSHA256(bobToken)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: f.store, Admins: admins, Key: f.key, Audit: audit.NewLog(f.sink, workerID),
		Providers: []string{"local", "vault"}, WorkerID: workerID, Log: zerolog.New(f.logs).Level(zerolog.DebugLevel)}
	s := &server{locks: map[string]*sync.Mutex{}}
	s.open = func(o registry.Options, p, k string, c []byte) (kms.KMS, error) {
		f.opens.Add(1)
		return registry.OpenWith(o, p, k, c)
	}
	for _, o := range opts {
		o(&cfg, s)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	h := s.handler()
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		f.mu.Lock()
		f.bodies = append(f.bodies, tw.buf.Bytes())
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
	}))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() {
		if !t.Failed() {
			f.checkNoLeaks(t)
		}
	})
	return f
}

func setKeyDisabled(t testing.TB, path, kekID string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf local.File
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	kf.Keys[kekID].Disabled = true
	b, _ = json.Marshal(kf)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// credential is a working credential of the local provider, carrying the canary in a field the
// provider ignores.
func (f *fixture) credential() string {
	b, _ := json.Marshal(map[string]string{"key_file": f.keyFile, "comment": credCanary})
	return string(b)
}

// do sends a request and returns the status and body.
func (f *fixture) do(t testing.TB, token, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", jsonType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (f *fixture) put(t testing.TB, body any) (int, []byte) {
	t.Helper()
	return f.do(t, aliceToken, http.MethodPut, settingsPath, body)
}

func (f *fixture) enable(t testing.TB, kekID string) SettingsView {
	t.Helper()
	status, body := f.put(t, map[string]any{"enabled": true, "provider": "local", "kek_id": kekID, "credential": f.credential()})
	if status != http.StatusOK {
		t.Fatalf("PUT settings (enable) = %d %s, want 200", status, body)
	}
	var v SettingsView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkNoLeaks scans logs, responses and audit events for the credential and token canaries.
func (f *fixture) checkNoLeaks(t testing.TB) {
	t.Helper()
	for _, c := range []string{credCanary, aliceToken, bobToken, f.keyFile} {
		if strings.Contains(f.logs.String(), c) {
			t.Errorf("logs contain %q:\n%s", c, f.logs.String())
		}
		f.mu.Lock()
		for _, b := range f.bodies {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("a response contains %q: %s", c, b)
			}
		}
		f.mu.Unlock()
		f.sink.mu.Lock()
		for _, b := range f.sink.raw {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("an audit event contains %q", c)
			}
		}
		f.sink.mu.Unlock()
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	paths := []struct{ method, path string }{
		{http.MethodGet, "/v1/tenants"},
		{http.MethodGet, settingsPath},
		{http.MethodPut, settingsPath},
		{http.MethodGet, "/v1/tenants/acme/revocations"},
		{http.MethodPost, "/v1/tenants/acme/revocations"},
		{http.MethodDelete, "/v1/tenants/acme/revocations/x"},
	}
	for _, p := range paths {
		for _, tok := range []string{"", "wrong", aliceToken + "x"} {
			if status, body := f.do(t, tok, p.method, p.path, `{}`); status != http.StatusUnauthorized || !strings.Contains(string(body), "bearer token") {
				t.Errorf("%s %s with token %q = %d %s, want 401", p.method, p.path, tok, status, body)
			}
		}
		if p.path == "/v1/tenants" {
			continue
		}
		// bob administers initech only.
		status, body := f.do(t, bobToken, p.method, p.path, `{"enabled": false, "reason": "r"}`)
		if status != http.StatusForbidden || !strings.Contains(string(body), `admin bob may not act on tenant \"acme\"`) {
			t.Errorf("%s %s as bob = %d %s, want 403 naming the tenant", p.method, p.path, status, body)
		}
	}
	if _, ok := f.store.Settings("acme"); ok {
		t.Fatal("a refused request saved settings")
	}
	if n := len(f.store.Revocations("acme")); n != 0 {
		t.Fatalf("a refused request revoked: %d revocations", n)
	}

	status, body := f.do(t, aliceToken, http.MethodGet, "/v1/tenants", nil)
	var tr TenantsResponse
	if status != http.StatusOK || json.Unmarshal(body, &tr) != nil {
		t.Fatalf("GET /v1/tenants = %d %s", status, body)
	}
	if tr.Admin != "alice" || len(tr.Tenants) != 2 || tr.Tenants[0].TenantID != "acme" || tr.Tenants[1].TenantID != "globex" ||
		strings.Join(tr.Providers, ",") != "local,vault" {
		t.Fatalf("GET /v1/tenants = %+v, want alice's acme and globex (sorted) and providers local,vault", tr)
	}
}

func TestSaveValidatesSealsAndAudits(t *testing.T) {
	f := newFixture(t)
	v := f.enable(t, kekAcme)
	if !v.Enabled || v.Provider != "local" || v.KEKID != kekAcme || !v.CredentialSet || v.Revision != 1 || v.UpdatedBy != "alice" || v.UpdatedAt == nil {
		t.Fatalf("PUT settings = %+v, want enabled local acme-kek, credential set, revision 1 by alice", v)
	}
	ts, ok := f.store.Settings("acme")
	if !ok {
		t.Fatal("settings not stored")
	}
	if bytes.Contains(ts.SealedCredential, []byte(credCanary)) {
		t.Fatal("stored credential is in clear")
	}
	c, err := settings.ToConfig(ts, f.key)
	if err != nil || string(c.Credential) != f.credential() || !c.Enabled || c.KEKID != kekAcme {
		t.Fatalf("stored record opens to %v (%d bytes), %v; want the typed credential", c, len(c.Credential), err)
	}
	if ts.SettingsKeyId != f.key.ID() || ts.SchemaVersion != 1 || ts.TenantId != "acme" {
		t.Fatalf("stored record = key %q schema %d tenant %q", ts.SettingsKeyId, ts.SchemaVersion, ts.TenantId)
	}

	want := []string{"describe/validate/ok", "wrap/validate/ok", "unwrap/validate/ok", "settings_change/enable/ok"}
	if got := f.sink.ops(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("audit events = %v, want %v", got, want)
	}
	for _, ev := range f.sink.all() {
		if ev.TenantId != "acme" || ev.ActorUser != "alice" || ev.ActorService != workerID || ev.KekId != kekAcme || ev.Provider != "local" || ev.RequestId == "" {
			t.Fatalf("audit event %+v: want tenant acme, actor alice via %s, local/%s, a request id", ev, workerID, kekAcme)
		}
	}

	status, body := f.do(t, aliceToken, http.MethodGet, settingsPath, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"credential_set":true`) {
		t.Fatalf("GET settings = %d %s", status, body)
	}
	// checkNoLeaks (at cleanup) holds logs, responses and audit events free of the credential.
}

func TestRefusedWithReasonAndNothingSaved(t *testing.T) {
	f := newFixture(t)
	f.enable(t, kekAcme)
	before, _ := f.store.Settings("acme")
	events := len(f.sink.all())
	missingFile, _ := json.Marshal(map[string]string{"key_file": filepath.Join(t.TempDir(), "none.json"), "comment": credCanary})
	for _, tc := range []struct {
		name, kekID, cred, want string
	}{
		{"unknown key id", "no-such-kek", "", "found no such key: check the KMS Key ID"},
		{"disabled key", kekDisabled, "", "was refused"},
		{"unreachable KMS", kekAcme, string(missingFile), "could not reach the KMS"},
		{"credential the provider rejects", kekAcme, `{"keyfile": "` + credCanary + `"}`, `credential must be {\"key_file\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := map[string]any{"enabled": true, "provider": "local", "kek_id": tc.kekID}
			if tc.cred != "" {
				req["credential"] = tc.cred
			}
			status, body := f.put(t, req)
			if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), tc.want) {
				t.Fatalf("PUT settings = %d %s, want 422 saying %q", status, body, tc.want)
			}
			after, _ := f.store.Settings("acme")
			if !proto.Equal(before, after) {
				t.Fatalf("refused settings changed the store: %v", after)
			}
		})
	}
	for _, ev := range f.sink.all()[events:] {
		if ev.Operation == audit.OpSettingsChange {
			t.Fatalf("a refused save recorded a settings change: %+v", ev)
		}
		if ev.Purpose != "validate" || ev.ActorUser != "alice" {
			t.Fatalf("validation call audited as %+v, want purpose validate by alice", ev)
		}
	}
	if !strings.Contains(f.logs.String(), "settings refused") {
		t.Fatal("a refused save was not logged")
	}
}

func TestRefusalReasonIsRedacted(t *testing.T) {
	// A provider (or a library under it) that quotes the credential in its error.
	f := newFixture(t, func(_ *Config, s *server) {
		s.open = func(registry.Options, string, string, []byte) (kms.KMS, error) {
			return nil, fmt.Errorf("sdk: login with %s failed; full credential was %s", credCanary, `{"comment":"`+credCanary+`"}`)
		}
	})
	status, body := f.put(t, map[string]any{"enabled": true, "provider": "local", "kek_id": kekAcme, "credential": f.credential()})
	if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), "login with [redacted] failed") {
		t.Fatalf("PUT settings = %d %s, want 422 with the credential redacted", status, body)
	}
	// checkNoLeaks at cleanup: the canary is in no response.
}

func TestKeepStoredCredentialDisableAndReenable(t *testing.T) {
	f := newFixture(t)
	f.enable(t, kekAcme)
	first, _ := f.store.Settings("acme")

	status, body := f.put(t, map[string]any{"enabled": false})
	if status != http.StatusOK {
		t.Fatalf("PUT disable = %d %s", status, body)
	}
	off, _ := f.store.Settings("acme")
	if off.Enabled || off.Provider != "local" || off.KekId != kekAcme || !bytes.Equal(off.SealedCredential, first.SealedCredential) || off.Revision != 2 {
		t.Fatalf("after disable: %v; want disabled, provider/kek/credential kept, revision 2", off)
	}
	opens := f.opens.Load()
	if status, body := f.put(t, map[string]any{"enabled": true}); status != http.StatusOK {
		t.Fatalf("PUT re-enable with the stored credential = %d %s", status, body)
	}
	if f.opens.Load() != opens+1 {
		t.Fatal("re-enabling did not validate with the stored credential")
	}
	on, _ := f.store.Settings("acme")
	if !on.Enabled || on.Revision != 3 {
		t.Fatalf("after re-enable: %v", on)
	}
	var purposes []string
	for _, ev := range f.sink.all() {
		if ev.Operation == audit.OpSettingsChange {
			purposes = append(purposes, ev.Purpose)
		}
	}
	if strings.Join(purposes, ",") != "enable,disable,enable" {
		t.Fatalf("settings_change purposes = %v, want enable,disable,enable", purposes)
	}
	// A credential sealed with another settings key cannot be reused: the admin must enter it.
	other, err := settings.NewKey(bytes.Repeat([]byte{1}, settings.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	moved := proto.Clone(on).(*byokv1.TenantSettings)
	moved.SealedCredential, _ = settings.Seal(other, "acme", []byte(f.credential()))
	moved.SettingsKeyId = other.ID()
	f.store.PutSettings(context.Background(), moved)
	if status, body := f.put(t, map[string]any{"enabled": true}); status != http.StatusConflict || !strings.Contains(string(body), "enter the credential again") {
		t.Fatalf("PUT with a credential of another settings key = %d %s, want 409", status, body)
	}
	if status, body := f.put(t, map[string]any{"enabled": true, "credential": f.credential()}); status != http.StatusOK {
		t.Fatalf("PUT with the credential entered again = %d %s, want 200", status, body)
	}
}

func TestFailClosed(t *testing.T) {
	t.Run("audit down: validation not recorded", func(t *testing.T) {
		f := newFixture(t)
		f.sink.failing.Store(true)
		status, body := f.put(t, map[string]any{"enabled": true, "provider": "local", "kek_id": kekAcme, "credential": f.credential()})
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "audit log") {
			t.Fatalf("PUT with audit down = %d %s, want 503 naming the audit log", status, body)
		}
		if _, ok := f.store.Settings("acme"); ok {
			t.Fatal("settings saved although the audit log was down")
		}
	})
	t.Run("audit down: disable not recorded", func(t *testing.T) {
		f := newFixture(t)
		f.enable(t, kekAcme)
		f.sink.failing.Store(true)
		status, body := f.put(t, map[string]any{"enabled": false})
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "not saved") {
			t.Fatalf("PUT disable with audit down = %d %s, want 503", status, body)
		}
		if ts, _ := f.store.Settings("acme"); !ts.Enabled || ts.Revision != 1 {
			t.Fatalf("settings changed although the change was not recorded: %v", ts)
		}
	})
	t.Run("store down: change announced, then marked not saved", func(t *testing.T) {
		f := newFixture(t)
		f.store.failing.Store(true)
		status, body := f.put(t, map[string]any{"enabled": true, "provider": "local", "kek_id": kekAcme, "credential": f.credential()})
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "could not be saved") {
			t.Fatalf("PUT with store down = %d %s, want 503", status, body)
		}
		evs := f.sink.all()
		last, prev := evs[len(evs)-1], evs[len(evs)-2]
		if prev.Operation != audit.OpSettingsChange || prev.Result != audit.ResultOK ||
			last.Operation != audit.OpSettingsChange || last.Result != audit.ResultError || last.ErrorCode != ErrorCodeNotSaved {
			t.Fatalf("last events = %+v, %+v; want settings_change ok then settings_change error not_saved", prev, last)
		}
		status, body = f.do(t, aliceToken, http.MethodPost, "/v1/tenants/acme/revocations", map[string]string{"chat_id": "c", "reason": "r"})
		if status != http.StatusServiceUnavailable {
			t.Fatalf("POST revocation with store down = %d %s", status, body)
		}
	})
	t.Run("audit down: revocation not made", func(t *testing.T) {
		f := newFixture(t)
		f.sink.failing.Store(true)
		status, body := f.do(t, aliceToken, http.MethodPost, "/v1/tenants/acme/revocations", map[string]string{"chat_id": "c", "reason": "r"})
		if status != http.StatusServiceUnavailable || len(f.store.Revocations("acme")) != 0 {
			t.Fatalf("POST revocation with audit down = %d %s, %d stored; want 503 and none", status, body, len(f.store.Revocations("acme")))
		}
	})
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	big := `{"enabled": true, "credential": "` + strings.Repeat("a", MaxRequestBytes) + `"}`
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"not JSON", `{"enabled": tru`, 400, "not valid JSON"},
		{"unknown field", `{"enabled": true, "token": "x"}`, 400, "not valid JSON"},
		{"two objects", `{"enabled": true} {}`, 400, "not valid JSON"},
		{"wrong type", `{"enabled": "yes"}`, 400, "field enabled has the wrong type"},
		{"enabled missing", `{"provider": "local"}`, 400, "enabled is required"},
		{"unknown provider", `{"enabled": true, "provider": "aws"}`, 400, `provider \"aws\" is not one of local, vault`},
		{"provider with control chars", `{"enabled": true, "provider": "a\u0001"}`, 400, "provider contains a control character"},
		{"kek too long", `{"enabled": true, "kek_id": "` + strings.Repeat("k", MaxKEKIDLen+1) + `"}`, 400, "kek_id is longer than"},
		{"credential a number", `{"enabled": true, "credential": 42}`, 400, "credential must be a JSON object"},
		{"credential not JSON", `{"enabled": true, "credential": "token=` + credCanary + `"}`, 400, "credential is not a JSON object"},
		{"credential an array string", `{"enabled": true, "credential": "[\"` + credCanary + `\"]"}`, 400, "credential is not a JSON object"},
		{"enable without provider", `{"enabled": true, "kek_id": "k", "credential": {"key_file": "x"}}`, 400, "provider and kek_id are required"},
		{"enable without credential", `{"enabled": true, "provider": "local", "kek_id": "k"}`, 400, "credential is required"},
		{"too large", big, 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.put(t, tc.body)
			if status != tc.status || !strings.Contains(string(body), tc.want) {
				t.Fatalf("PUT %s = %d %s, want %d with %q", tc.name, status, body, tc.status, tc.want)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPut, f.srv.URL+settingsPath, strings.NewReader(`enabled=true`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	if resp, err := f.srv.Client().Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("PUT form-encoded = %v, %v; want 415", resp.Status, err)
	}
	if _, ok := f.store.Settings("acme"); ok {
		t.Fatal("a bad request saved settings")
	}

	// The default providers do not include local (its key file sits on the byok host).
	g := newFixture(t, func(c *Config, _ *server) { c.Providers = nil })
	if status, body := g.put(t, map[string]any{"enabled": true, "provider": "local", "kek_id": kekAcme, "credential": g.credential()}); status != http.StatusBadRequest {
		t.Fatalf("PUT provider local with default providers = %d %s, want 400", status, body)
	}
}

func TestRevocations(t *testing.T) {
	f := newFixture(t)
	f.enable(t, kekAcme)
	const base = "/v1/tenants/acme/revocations"
	post := func(body any) (int, RevocationView, string) {
		status, b := f.do(t, aliceToken, http.MethodPost, base, body)
		var v RevocationView
		json.Unmarshal(b, &v)
		return status, v, string(b)
	}
	status, chat, raw := post(RevocationRequest{ChatID: "c-17", Reason: "incident 42"})
	if status != http.StatusCreated || chat.ChatID != "c-17" || chat.Covers != "chat c-17, every day" || chat.CreatedBy != "alice" {
		t.Fatalf("POST chat revocation = %d %s", status, raw)
	}
	if id, err := uuid.Parse(chat.RevocationID); err != nil || id.Version() != 7 {
		t.Fatalf("revocation_id %q is not a UUIDv7 (%v)", chat.RevocationID, err)
	}
	status, days, raw := post(RevocationRequest{FromDay: "2026-01-01", ToDay: "2026-01-31", Reason: "January"})
	if status != http.StatusCreated || days.Covers != "every chat, 2026-01-01..2026-01-31" {
		t.Fatalf("POST range revocation = %d %s", status, raw)
	}
	status, open, raw := post(RevocationRequest{ChatID: "c-2", FromDay: "2026-02-01", Reason: "from February"})
	if status != http.StatusCreated || open.Covers != "chat c-2, from 2026-02-01" {
		t.Fatalf("POST open-ended revocation = %d %s", status, raw)
	}
	status, b := f.do(t, aliceToken, http.MethodGet, base, nil)
	var list RevocationsResponse
	if status != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Revocations) != 3 || list.Revocations[0].RevocationID != chat.RevocationID {
		t.Fatalf("GET revocations = %d %s, want the three, oldest first", status, b)
	}
	var scopes []string
	for _, ev := range f.sink.all() {
		if ev.Operation == audit.OpRevoke {
			if len(ev.Scopes) != 1 || ev.ActorUser != "alice" || ev.KekId != kekAcme {
				t.Fatalf("revoke event %+v", ev)
			}
			scopes = append(scopes, ev.Purpose+":"+ev.Scopes[0].ChatId+"@"+ev.Scopes[0].Day)
		}
	}
	if want := "chat:c-17@.. days:@2026-01-01..2026-01-31 chat_days:c-2@2026-02-01.."; strings.Join(scopes, " ") != want {
		t.Fatalf("revoke events = %v, want %s", scopes, want)
	}

	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"to before from", RevocationRequest{FromDay: "2026-02-01", ToDay: "2026-01-01", Reason: "r"}, "is before from_day"},
		{"bad day", RevocationRequest{FromDay: "2026-13-01", Reason: "r"}, "from_day must be a date"},
		{"not a day", RevocationRequest{ToDay: "yesterday", Reason: "r"}, "to_day must be a date"},
		{"no reason", RevocationRequest{ChatID: "c"}, "reason is required"},
		{"chat too long", RevocationRequest{ChatID: strings.Repeat("c", 300), Reason: "r"}, "chat_id is longer"},
		{"unknown field", `{"chat": "c", "reason": "r"}`, "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, _, raw := post(tc.body); status != http.StatusBadRequest || !strings.Contains(raw, tc.want) {
				t.Fatalf("POST = %d %s, want 400 with %q", status, raw, tc.want)
			}
		})
	}

	if status, b := f.do(t, aliceToken, http.MethodDelete, base+"/"+chat.RevocationID, nil); status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s, want 204", status, b)
	}
	for _, r := range f.store.Revocations("acme") {
		if r.RevocationId == chat.RevocationID {
			t.Fatal("un-revoked revocation still stored")
		}
	}
	if status, b := f.do(t, aliceToken, http.MethodDelete, base+"/"+chat.RevocationID, nil); status != http.StatusNotFound {
		t.Fatalf("DELETE again = %d %s, want 404", status, b)
	}
	if status, b := f.do(t, aliceToken, http.MethodDelete, "/v1/tenants/globex/revocations/"+days.RevocationID, nil); status != http.StatusNotFound {
		t.Fatalf("DELETE of acme's revocation under globex = %d %s, want 404", status, b)
	}
	evs := f.sink.all()
	if last := evs[len(evs)-1]; last.Operation != audit.OpUnrevoke || last.Scopes[0].ChatId != "c-17" || last.Purpose != PurposeChat {
		t.Fatalf("last event = %+v, want unrevoke of chat c-17", last)
	}
}

func TestConcurrentSavesCountRevisions(t *testing.T) {
	f := newFixture(t)
	f.enable(t, kekAcme)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, b := f.put(t, map[string]any{"enabled": i%2 == 0}); status != http.StatusOK {
				t.Errorf("PUT = %d %s", status, b)
			}
		}()
	}
	wg.Wait()
	if ts, _ := f.store.Settings("acme"); ts.Revision != 9 {
		t.Fatalf("revision after 1+8 saves = %d, want 9", ts.Revision)
	}
}

func TestPageAndAssets(t *testing.T) {
	f := newFixture(t)
	get := func(path string) (*http.Response, string) {
		resp, err := f.srv.Client().Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, page := get("/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"Advanced encryption", "When enabled, all new messages are encrypted automatically.", "KMS Key ID",
		"JSON key for authorization in the encryption system", "Save changes", "Revocations"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("page CSP = %q", csp)
	}
	for _, asset := range []string{"/assets/app.js", "/assets/style.css", "/"} {
		resp, body := get(asset)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %s", asset, resp.Status)
		}
		// Nothing from elsewhere: no CDN, no web fonts, no absolute URLs.
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "url("} {
			if strings.Contains(body, bad) {
				t.Errorf("%s contains %q: the page must load nothing from elsewhere", asset, bad)
			}
		}
	}
	if resp, _ := get("/assets/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /assets/ = %s, want 404 (no listing)", resp.Status)
	}
	if resp, body := get("/v1/nope"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no such endpoint") {
		t.Errorf("GET /v1/nope = %s %s", resp.Status, body)
	}
	if resp, _ := get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("GET /healthz = %s", resp.Status)
	}
}

func TestParseAdmins(t *testing.T) {
	a, err := ParseAdmins(fmt.Appendf(nil, testAdmins, callers.TokenSHA256("a"), callers.TokenSHA256("b")))
	if err != nil {
		t.Fatal(err)
	}
	if ad, ok := a.Authenticate("a"); !ok || ad.Name != "alice" || strings.Join(ad.Tenants, ",") != "acme,globex" || !ad.Allowed("acme") || ad.Allowed("initech") {
		t.Fatalf("Authenticate(a) = %+v, %v", ad, ok)
	}
	if _, ok := a.Authenticate("c"); ok {
		t.Fatal("unknown token authenticated")
	}
	if _, err := ParseAdmins([]byte(`{"callers": {}}`)); err == nil {
		t.Fatal("empty admins file accepted")
	}
}

func TestNewHandlerNeedsItsParts(t *testing.T) {
	if _, err := NewHandler(Config{}); err == nil {
		t.Fatal("NewHandler(Config{}) succeeded")
	}
	f := newFixture(t)
	_, err := NewHandler(Config{Store: NewMemStore(), Admins: &Admins{}, Key: f.key, Audit: audit.NewLog(&memSink{}, "x"), Providers: []string{"aws"}})
	if err == nil || !strings.Contains(err.Error(), `"aws"`) {
		t.Fatalf("NewHandler(provider aws) err = %v", err)
	}
}

// TestDEKCacheTTL: the customer sets how long readers may use a DEK their KMS unwrapped, up to
// the deployment's maximum; omitting it keeps the saved value; it is published with the settings.
func TestDEKCacheTTL(t *testing.T) {
	f := newFixture(t)
	f.enable(t, kekAcme)
	if status, body := f.put(t, map[string]any{"enabled": true, "dek_cache_ttl_seconds": 15}); status != http.StatusOK {
		t.Fatalf("PUT with a 15 s TTL = %d %s", status, body)
	}
	if ts, _ := f.store.Settings("acme"); ts.DekCacheTtlSeconds != 15 {
		t.Fatalf("stored TTL = %d, want 15", ts.DekCacheTtlSeconds)
	}
	if status, body := f.put(t, map[string]any{"enabled": true}); status != http.StatusOK || !strings.Contains(string(body), `"dek_cache_ttl_seconds":15`) {
		t.Fatalf("PUT without a TTL = %d %s, want the saved 15 kept", status, body)
	}
	status, body := f.put(t, map[string]any{"enabled": true, "dek_cache_ttl_seconds": 61})
	if status != http.StatusBadRequest || !strings.Contains(string(body), "maximum of 60") {
		t.Fatalf("PUT with 61 s = %d %s, want 400 naming the maximum", status, body)
	}
	if status, body := f.do(t, aliceToken, http.MethodGet, "/v1/tenants", nil); status != http.StatusOK || !strings.Contains(string(body), `"max_dek_cache_ttl_seconds":60`) {
		t.Fatalf("GET /v1/tenants = %d %s, want the maximum shown", status, body)
	}
}
