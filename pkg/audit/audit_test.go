package audit

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
)

// memSink stores events; fail makes writes fail.
type memSink struct {
	mu     sync.Mutex
	events []*byokv1.AuditEvent
	fail   bool
}

func (m *memSink) Write(_ context.Context, key, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("broker unreachable")
	}
	var ev byokv1.AuditEvent
	if err := proto.Unmarshal(value, &ev); err != nil {
		return err
	}
	if string(key) != ev.TenantId {
		return errors.New("event not keyed by tenant")
	}
	m.events = append(m.events, &ev)
	return nil
}

func (m *memSink) all() []*byokv1.AuditEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*byokv1.AuditEvent(nil), m.events...)
}

func fixture(t *testing.T) (string, *memSink, *Log) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(path, "kek-acme", "kek-off"); err != nil {
		t.Fatal(err)
	}
	if err := local.Update(path, func(f *local.File) { f.Keys["kek-off"].Disabled = true }); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	return path, sink, NewLog(sink, "worker-1")
}

func wrapReqs(chats ...string) []kms.WrapRequest {
	var reqs []kms.WrapRequest
	for _, c := range chats {
		reqs = append(reqs, kms.WrapRequest{DEK: bytes.Repeat([]byte{1}, 32), Context: scope.Scope{TenantID: "acme", ChatID: c, Day: 20426}.KMSContext()})
	}
	return reqs
}

func TestEveryCallIsRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	k := Wrap(local.New(path, "kek-acme"), "acme", log, Access{ActorService: "encryptor", Purpose: "encrypt"})
	res, err := k.Wrap(context.Background(), wrapReqs("general", "random"))
	if err != nil || res[0].Err != nil {
		t.Fatal(err)
	}
	ctx := WithAccess(context.Background(), Access{ActorService: "render-svc", ActorUser: "user-42", Purpose: "render", RequestID: "req-1"})
	if _, err := k.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: res[0].WrappedDEK, Context: wrapReqs("general")[0].Context}}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Describe(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := sink.all()
	if len(evs) != 3 {
		t.Fatalf("recorded %d events, want 3 (wrap, unwrap, describe)", len(evs))
	}
	w, u, d := evs[0], evs[1], evs[2]
	if w.Operation != OpWrap || w.TenantId != "acme" || w.Provider != "local" || w.KekId != "kek-acme" || w.KekVersion != "1" ||
		w.DekCount != 2 || len(w.Scopes) != 2 || w.Scopes[1].ChatId != "random" || w.Scopes[1].Day != "2025-12-04" ||
		w.ActorService != "encryptor" || w.Purpose != "encrypt" || w.Result != ResultOK || w.WorkerId != "worker-1" || w.EventId == "" {
		t.Fatalf("wrap event = %v", w)
	}
	if u.Operation != OpUnwrap || u.ActorService != "render-svc" || u.ActorUser != "user-42" || u.Purpose != "render" || u.RequestId != "req-1" {
		t.Fatalf("unwrap event = %v, want the context's actor and purpose", u)
	}
	if d.Operation != OpDescribe || d.Result != ResultOK {
		t.Fatalf("describe event = %v", d)
	}
}

func TestDeniedAndFailedItemsAreRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	off := Wrap(local.New(path, "kek-off"), "acme", log, Access{ActorService: "encryptor", Purpose: "encrypt"})
	if _, err := off.Wrap(context.Background(), wrapReqs("general")); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Wrap(disabled key) err = %v", err)
	}
	on := Wrap(local.New(path, "kek-acme"), "acme", log, Access{})
	res, _ := on.Wrap(context.Background(), wrapReqs("a"))
	_, err := on.Unwrap(context.Background(), []kms.UnwrapRequest{
		{WrappedDEK: res[0].WrappedDEK, Context: wrapReqs("a")[0].Context},
		{WrappedDEK: res[0].WrappedDEK, Context: wrapReqs("moved")[0].Context},
	})
	if err != nil {
		t.Fatal(err)
	}
	evs := sink.all()
	if e := evs[0]; e.Result != ResultDenied || e.ErrorCode != "access_denied" || e.FailedItems != 1 {
		t.Fatalf("denied wrap event = %v", e)
	}
	if e := evs[2]; e.Result != ResultError || e.ErrorCode != "invalid_ciphertext" || e.FailedItems != 1 || e.DekCount != 2 {
		t.Fatalf("half-failed unwrap event = %v", e)
	}
}

// spyKMS returns DEK slices the test can inspect after the wrapper is done with them.
type spyKMS struct {
	kms.KMS
	handed [][]byte
}

func (s *spyKMS) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	res, err := s.KMS.Unwrap(ctx, reqs)
	for _, r := range res {
		s.handed = append(s.handed, r.DEK)
	}
	return res, err
}

func TestFailClosedWhenNotRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	spy := &spyKMS{KMS: local.New(path, "kek-acme")}
	k := Wrap(spy, "acme", log, Access{ActorService: "encryptor", Purpose: "encrypt"})
	res, err := k.Wrap(context.Background(), wrapReqs("general"))
	if err != nil {
		t.Fatal(err)
	}
	sink.fail = true
	if got, err := k.Wrap(context.Background(), wrapReqs("x")); got != nil || !errors.Is(err, kms.ErrUnavailable) || !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Wrap with audit down = %v, %v; want no results and ErrUnavailable/ErrNotRecorded", got, err)
	}
	got, err := k.Unwrap(context.Background(), []kms.UnwrapRequest{{WrappedDEK: res[0].WrappedDEK, Context: wrapReqs("general")[0].Context}})
	if got != nil || !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Unwrap with audit down = %v, %v", got, err)
	}
	if len(spy.handed) != 1 || !bytes.Equal(spy.handed[0], make([]byte, 32)) {
		t.Fatal("a DEK unwrapped while audit was down was not zeroed")
	}
	if strings.Contains(err.Error(), "\x01\x01") {
		t.Fatal("error carries key material")
	}
	// The chain does not advance on a failed write: the next event continues it.
	sink.fail = false
	if _, err := k.Describe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := Verify(sink.all()); len(r) != 1 || r[0].Problem != "" || r[0].Events != 2 {
		t.Fatalf("Verify after an audit outage = %+v, want one intact chain of 2", r)
	}
}

func TestVerifyFindsBrokenLinks(t *testing.T) {
	sink := &memSink{}
	log := NewLog(sink, "w1")
	for i := 0; i < 5; i++ {
		for _, tenant := range []string{"acme", "globex"} {
			if err := log.Emit(context.Background(), &byokv1.AuditEvent{TenantId: tenant, Operation: OpWrap, Result: ResultOK}); err != nil {
				t.Fatal(err)
			}
		}
	}
	evs := sink.all()
	ok := Verify(append(evs, evs[3])) // a duplicate delivery is harmless
	if len(ok) != 2 || ok[0].Problem != "" || ok[1].Problem != "" || ok[0].Events != 5 {
		t.Fatalf("Verify(intact) = %+v", ok)
	}
	acme := func(evs []*byokv1.AuditEvent) []*byokv1.AuditEvent {
		var out []*byokv1.AuditEvent
		for _, e := range evs {
			if e.TenantId == "acme" {
				out = append(out, proto.Clone(e).(*byokv1.AuditEvent))
			}
		}
		return out
	}
	tests := map[string]struct {
		mutate func([]*byokv1.AuditEvent) []*byokv1.AuditEvent
		want   string
	}{
		"altered purpose": {func(e []*byokv1.AuditEvent) []*byokv1.AuditEvent { e[2].Purpose = "export"; return e }, "seq 2"},
		"deleted event":   {func(e []*byokv1.AuditEvent) []*byokv1.AuditEvent { return append(e[:1], e[2:]...) }, "missing event(s) seq 1..1"},
		"forged rehash": {func(e []*byokv1.AuditEvent) []*byokv1.AuditEvent {
			e[1].Result = ResultOK + "!"
			e[1].Hash = Hash(e[1]) // consistent with itself, but the next link breaks
			return e
		}, "seq 2"},
	}
	for name, tt := range tests {
		r := Verify(tt.mutate(acme(evs)))
		if len(r) != 1 || !strings.Contains(r[0].Problem, tt.want) {
			t.Errorf("Verify(%s) = %+v, want a problem mentioning %q", name, r, tt.want)
		}
	}
}

func TestRefusedCallsAreRecorded(t *testing.T) {
	path, sink, log := fixture(t)
	k := Wrap(local.New(path, "kek-acme"), "acme", log, Access{})
	ctx := WithAccess(context.Background(), Access{ActorService: "reader", ActorUser: "u-7", Purpose: "export"})
	if err := k.Refused(ctx, OpUnwrap, CodeScopeRevoked, [][]byte{wrapReqs("secret-chat")[0].Context}); err != nil {
		t.Fatal(err)
	}
	evs := sink.all()
	if len(evs) != 1 {
		t.Fatalf("recorded %d events, want 1", len(evs))
	}
	e := evs[0]
	if e.Result != ResultDenied || e.ErrorCode != CodeScopeRevoked || e.FailedItems != 1 || e.Scopes[0].ChatId != "secret-chat" ||
		e.ActorUser != "u-7" || e.Purpose != "export" || e.Operation != OpUnwrap {
		t.Fatalf("refusal event = %v", e)
	}
}
