package rotate_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
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

// memSink keeps audit events in memory.
type memSink struct {
	mu     sync.Mutex
	events []*byokv1.AuditEvent
	fail   bool
}

func (m *memSink) Write(_ context.Context, _, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("audit topic unreachable")
	}
	var ev byokv1.AuditEvent
	if err := proto.Unmarshal(value, &ev); err != nil {
		return err
	}
	m.events = append(m.events, &ev)
	return nil
}

// ops counts events by operation, and the DEKs they carried.
func (m *memSink) ops() (calls, deks map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	calls, deks = map[string]int{}, map[string]int{}
	for _, e := range m.events {
		calls[e.Operation]++
		deks[e.Operation] += int(e.DekCount)
	}
	return calls, deks
}

func (m *memSink) reset() {
	m.mu.Lock()
	m.events = nil
	m.mu.Unlock()
}

// tenants resolves tenant ids to audited KMSs.
type tenants map[string]kms.KMS

func (t tenants) KMSFor(id string) (kms.KMS, error) {
	k, ok := t[id]
	if !ok {
		return nil, fmt.Errorf("tenant %s: %w", id, dek.ErrNoKMS)
	}
	return k, nil
}

// message is one sealed message.
type message struct {
	id       string
	scope    scope.Scope
	body     []byte
	envelope []byte
}

// seal seals n messages in each chat of tenant with DEKs from a fresh dek.Manager (so the DEKs
// are wrapped under the KEK's version of now), as the encryptor does.
func seal(t *testing.T, r dek.Resolver, tenant string, chats []string, n int) []message {
	t.Helper()
	m := dek.New(r, dek.Config{})
	defer m.Close()
	var out []message
	for _, chat := range chats {
		s := scope.Scope{TenantID: tenant, ChatID: chat, Day: 20426}
		k, err := m.Key(context.Background(), s)
		if err != nil {
			t.Fatalf("dek.Key(%s) err = %v", s, err)
		}
		for i := range n {
			id := fmt.Sprintf("%s-%s-m%d", tenant, chat, i)
			body := []byte(fmt.Sprintf("secret body %d of %s/%s", i, tenant, chat))
			env, err := k.Seal(id, body)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, message{id: id, scope: s, body: body, envelope: env})
		}
	}
	return out
}

func envelopes(ms []message) [][]byte {
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = m.envelope
	}
	return out
}

// open opens each envelope through the tenants' KMSs (pkg/decrypt, the read path).
func open(r dek.Resolver, ids []string, envs [][]byte) ([][]byte, []error) {
	items := make([]decrypt.Item, len(envs))
	for i := range envs {
		items[i] = decrypt.Item{MessageID: ids[i], Envelope: envs[i]}
	}
	o := &decrypt.Opener{Resolver: r}
	return o.Open(context.Background(), decrypt.Request{Actor: "rotate-test", Purpose: "verify"}, items)
}

func ids(ms []message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.id
	}
	return out
}

func parse(t *testing.T, b []byte) *envelope.Envelope {
	t.Helper()
	e, err := envelope.Parse(b)
	if err != nil {
		t.Fatalf("envelope.Parse err = %v", err)
	}
	return e
}

// body returns the bytes of an envelope after its key reference: nonce ‖ ciphertext.
func body(t *testing.T, b []byte) []byte {
	t.Helper()
	e := parse(t, b)
	return append(e.Nonce[:], e.Ciphertext...)
}

// localTenant is a tenant whose KEK is in a local key file, audited into sink.
type localTenant struct {
	path, kekID string
	kms         *audit.KMS
}

func newLocalTenant(t *testing.T, tenant string, sink *memSink) *localTenant {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	kekID := "kek-" + tenant
	if err := local.WriteKeyFile(path, kekID); err != nil {
		t.Fatal(err)
	}
	k := audit.Wrap(local.New(path, kekID), tenant, audit.NewLog(sink, "rotate-test"), audit.Access{ActorService: "rotate-test", Purpose: "rewrap"})
	return &localTenant{path: path, kekID: kekID, kms: k}
}

// rotate adds version v with fresh key bytes and makes it the primary.
func (lt *localTenant) rotate(t *testing.T, v string) {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	if err := local.Update(lt.path, func(f *local.File) {
		f.Keys[lt.kekID].Versions[v] = base64.StdEncoding.EncodeToString(raw)
		f.Keys[lt.kekID].Primary = v
	}); err != nil {
		t.Fatal(err)
	}
}

// retire deletes version v from the key file.
func (lt *localTenant) retire(t *testing.T, v string) {
	t.Helper()
	if err := local.Update(lt.path, func(f *local.File) { delete(f.Keys[lt.kekID].Versions, v) }); err != nil {
		t.Fatal(err)
	}
}

// plainKMS hides every method but kms.KMS's: a provider that cannot rewrap in place.
type plainKMS struct{ kms.KMS }

// aeadOf is AES-256-GCM with key d, as pkg/dek and pkg/decrypt build it.
func aeadOf(t *testing.T, d []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(d)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
