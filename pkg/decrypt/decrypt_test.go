package decrypt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/decrypt"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/scope"
)

type countingKMS struct {
	kms.KMS
	unwraps atomic.Int64
}

func (c *countingKMS) Unwrap(ctx context.Context, r []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	c.unwraps.Add(1)
	return c.KMS.Unwrap(ctx, r)
}

type resolver map[string]*countingKMS

func (r resolver) KMSFor(t string) (kms.KMS, error) {
	if k, ok := r[t]; ok {
		return k, nil
	}
	return nil, dek.ErrNoKMS
}

func TestOpenBatchesPerTenantAndBindsPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(path, "acme", "globex"); err != nil {
		t.Fatal(err)
	}
	r := resolver{"acme": {KMS: local.New(path, "acme")}, "globex": {KMS: local.New(path, "globex")}}
	m := dek.New(r, dek.Config{})
	defer m.Close()

	var items []decrypt.Item
	var want []string
	for i := 0; i < 60; i++ {
		tenant := []string{"acme", "globex"}[i%2]
		k, err := m.Key(context.Background(), scope.Scope{TenantID: tenant, ChatID: fmt.Sprintf("c%d", i%5), Day: 20426})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("m-%d", i)
		env, err := k.Seal(id, []byte("body "+id))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, decrypt.Item{MessageID: id, Envelope: env})
		want = append(want, "body "+id)
	}
	// The last item claims another message's envelope: it must not open.
	items = append(items, decrypt.Item{MessageID: "m-999", Envelope: items[0].Envelope})

	o := &decrypt.Opener{Resolver: r}
	bodies, errs := o.Open(context.Background(), decrypt.Request{Actor: "test", Purpose: "verify"}, items)
	for i := range want {
		if errs[i] != nil || string(bodies[i]) != want[i] {
			t.Fatalf("item %d = %q, %v; want %q", i, bodies[i], errs[i], want[i])
		}
	}
	if !errors.Is(errs[len(items)-1], envelope.ErrOpen) {
		t.Fatalf("moved envelope err = %v, want envelope.ErrOpen", errs[len(items)-1])
	}
	if a, g := r["acme"].unwraps.Load(), r["globex"].unwraps.Load(); a != 1 || g != 1 {
		t.Fatalf("unwrap calls acme=%d globex=%d, want one each", a, g)
	}

	_, errs = o.Open(context.Background(), decrypt.Request{Purpose: "render"}, items[:1])
	if !errors.Is(errs[0], decrypt.ErrNoActorOrPurpose) {
		t.Fatalf("Open without actor err = %v, want ErrNoActorOrPurpose", errs[0])
	}
}

func TestOpenRecordsActorAndPurpose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(path, "acme"); err != nil {
		t.Fatal(err)
	}
	r := resolver{"acme": {KMS: local.New(path, "acme")}}
	m := dek.New(r, dek.Config{})
	defer m.Close()
	k, err := m.Key(context.Background(), scope.Scope{TenantID: "acme", ChatID: "c", Day: 20426})
	if err != nil {
		t.Fatal(err)
	}
	env, _ := k.Seal("m-1", []byte("hi"))
	sink := &memSink{}
	o := &decrypt.Opener{Resolver: &audit.Resolver{Inner: r, Log: audit.NewLog(sink, "reader-1")}}
	_, errs := o.Open(context.Background(), decrypt.Request{Actor: "render-svc", OnBehalfOf: "user-42", Purpose: "render"},
		[]decrypt.Item{{MessageID: "m-1", Envelope: env}})
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	if len(sink.events) != 1 {
		t.Fatalf("recorded %d events, want 1", len(sink.events))
	}
	if e := sink.events[0]; e.Operation != "unwrap" || e.ActorService != "render-svc" || e.ActorUser != "user-42" || e.Purpose != "render" {
		t.Fatalf("event = %v, want unwrap by render-svc for user-42, purpose render", e)
	}
}

type memSink struct{ events []*byokv1.AuditEvent }

func (m *memSink) Write(_ context.Context, _, value []byte) error {
	var ev byokv1.AuditEvent
	if err := proto.Unmarshal(value, &ev); err != nil {
		return err
	}
	m.events = append(m.events, &ev)
	return nil
}
