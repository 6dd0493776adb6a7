package rotate_test

// Integration tests on a real Vault (and Kafka): rotation, rewrap, retirement and
// crypto-shredding as the customer's security team would run them. They skip without
// BYOK_TEST_VAULT_ADDR (and BYOK_TEST_KAFKA_BROKERS) unless BYOK_REQUIRE_INTEGRATION=1.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/internal/testenv"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/vault"
	"github.com/byok-io/byok/pkg/rotate"
)

// vaultTenant is a tenant whose KEK is a derived transit key in a real Vault, reached with a
// least-privilege token (encrypt, decrypt, rewrap, read), audited into sink.
type vaultTenant struct {
	id, key string
	kms     *audit.KMS
	admin   *vault.Admin // the customer's security team (root token here)
}

func newVaultTenant(t *testing.T, id string, sink *memSink) *vaultTenant {
	t.Helper()
	addr, token := testenv.Vault(t)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	root, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(token)
	key := fmt.Sprintf("rotate-%s-%s-%d", strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()), id, time.Now().UnixNano())
	if _, err := root.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		t.Fatal(err)
	}
	// The policy docs/rotation.md gives byok's tenant token.
	policy := fmt.Sprintf(`
path "transit/encrypt/%[1]s" { capabilities = ["update"] }
path "transit/decrypt/%[1]s" { capabilities = ["update"] }
path "transit/rewrap/%[1]s"  { capabilities = ["update"] }
path "transit/keys/%[1]s"    { capabilities = ["read"] }`, key)
	if err := root.Sys().PutPolicy("byok-"+key, policy); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"byok-" + key}, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Credential{Address: addr, Token: tok.Auth.ClientToken}, key, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := vault.NewAdmin(vault.Credential{Address: addr, Token: token}, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := audit.Wrap(c, id, audit.NewLog(sink, "rotate-test"), audit.Access{ActorService: "rotate-test", Purpose: "rewrap"})
	return &vaultTenant{id: id, key: key, kms: k, admin: a}
}

func (vt *vaultTenant) rotatable() rotatable {
	return rotatable{
		id: vt.id, kms: vt.kms,
		rotate: func(t *testing.T) {
			if v, err := vt.admin.RotateKey(context.Background(), vt.key); err != nil || v.Latest != 2 {
				t.Fatalf("RotateKey = %+v, %v", v, err)
			}
		},
		retire1: func(t *testing.T) {
			if v, err := vt.admin.SetMinDecryptionVersion(context.Background(), vt.key, 2); err != nil || v.MinDecryption != 2 {
				t.Fatalf("SetMinDecryptionVersion(2) = %+v, %v", v, err)
			}
		},
	}
}

func TestVaultRotateRewrapRetire(t *testing.T) {
	ctx := context.Background()
	sink := &memSink{}
	acme := newVaultTenant(t, "acme", sink)
	r := tenants{"acme": acme.kms}

	old := seal(t, r, "acme", []string{"general", "random", "ops"}, 3)
	for _, m := range old {
		if v := parse(t, m.envelope).Key.KEKVersion; v != "1" {
			t.Fatalf("envelope sealed before rotation has KEK version %q, want 1", v)
		}
	}
	acme.rotatable().rotate(t)
	fresh := seal(t, r, "acme", []string{"general"}, 2)
	for _, m := range fresh {
		if v := parse(t, m.envelope).Key.KEKVersion; v != "2" {
			t.Fatalf("envelope sealed after rotation has KEK version %q, want 2 (new DEKs use the new version)", v)
		}
	}

	// In Vault: fails for every item (Vault's rewrap ignores associated_data), nothing changes.
	res, err := rotate.Rewrap(ctx, acme.kms, "acme", envelopes(old), rotate.Options{Method: rotate.MethodRewrap})
	if err != nil {
		t.Fatalf("Rewrap(in Vault) err = %v, want per-item errors", err)
	}
	for i, rr := range res {
		if !errors.Is(rr.Err, kms.ErrInvalidCiphertext) {
			t.Fatalf("Rewrap(in Vault) item %d err = %v, want kms.ErrInvalidCiphertext (if it succeeded, Vault's rewrap honours associated_data now: see pkg/kms/vault TestRewrapIgnoresAssociatedData)", i, rr.Err)
		}
	}

	// Unwrap+wrap through the audited KMS: the 3 distinct DEKs move to version 2 in one
	// unwrap and one wrap call; the fresh envelopes are already there.
	sink.reset()
	all := append(append([]message(nil), old...), fresh...)
	res, err = rotate.Rewrap(ctx, acme.kms, "acme", envelopes(all), rotate.Options{Method: rotate.MethodUnwrapWrap})
	if err != nil {
		t.Fatalf("Rewrap(unwrap-wrap) err = %v", err)
	}
	calls, deks := sink.ops()
	if calls[audit.OpUnwrap] != 1 || deks[audit.OpUnwrap] != 3 || calls[audit.OpWrap] != 1 || deks[audit.OpWrap] != 3 {
		t.Fatalf("audit calls %v DEKs %v, want one unwrap and one wrap of the 3 old DEKs", calls, deks)
	}
	rewrapped := checkRewrapped(t, r, old, res[:len(old)], "1", "2")
	for i, rr := range res[len(old):] {
		if !rr.Current || !bytes.Equal(rr.Envelope, fresh[i].envelope) {
			t.Fatalf("fresh envelope %d: Current %v, err %v; want it unchanged", i, rr.Current, rr.Err)
		}
	}
	for i, e := range rewrapped {
		if w := string(parse(t, e).Key.WrappedDEK); !strings.HasPrefix(w, "vault:v2:") {
			t.Fatalf("rewrapped envelope %d wrapped DEK %.9s…, want vault:v2:", i, w)
		}
	}

	// Retire version 1: what was not rewrapped no longer opens; what was, and what is new, does.
	acme.rotatable().retire1(t)
	_, errs := open(r, ids(old), envelopes(old))
	for i, err := range errs {
		if !errors.Is(err, kms.ErrInvalidCiphertext) {
			t.Fatalf("open(v1 envelope %d after min_decryption_version=2) err = %v, want kms.ErrInvalidCiphertext", i, err)
		}
	}
	if strings.Contains(errs[0].Error(), "secret body") {
		t.Fatalf("error carries a body: %v", errs[0])
	}
	for name, set := range map[string][]message{"rewrapped": old, "fresh": fresh} {
		envs := rewrapped
		if name == "fresh" {
			envs = envelopes(fresh)
		}
		bodies, errs := open(r, ids(set), envs)
		for i := range set {
			if errs[i] != nil || !bytes.Equal(bodies[i], set[i].body) {
				t.Fatalf("open(%s envelope %d after retiring v1) err = %v", name, i, errs[i])
			}
		}
	}
}

// TestVaultCryptoShredTenant: deleting a tenant's key in Vault makes every envelope of the tenant
// unrecoverable; another tenant's key and envelopes are untouched.
func TestVaultCryptoShredTenant(t *testing.T) {
	ctx := context.Background()
	sink := &memSink{}
	acme, globex := newVaultTenant(t, "acme", sink), newVaultTenant(t, "globex", sink)
	r := tenants{"acme": acme.kms, "globex": globex.kms}
	acmeMsgs := seal(t, r, "acme", []string{"general", "random"}, 3)
	acme.rotatable().rotate(t)
	acmeMsgs = append(acmeMsgs, seal(t, r, "acme", []string{"ops"}, 2)...) // both versions
	globexMsgs := seal(t, r, "globex", []string{"general"}, 3)

	// Positive control: everything opens before the shredding.
	if _, errs := open(r, ids(acmeMsgs), envelopes(acmeMsgs)); errors.Join(errs...) != nil {
		t.Fatalf("open before shredding: %v", errors.Join(errs...))
	}
	if err := acme.admin.DeleteKey(ctx, acme.key); err != nil {
		t.Fatalf("DeleteKey err = %v", err)
	}
	_, errs := open(r, ids(acmeMsgs), envelopes(acmeMsgs))
	for i, err := range errs {
		if !errors.Is(err, kms.ErrKeyNotFound) {
			t.Fatalf("open(acme envelope %d after deleting its key) err = %v, want kms.ErrKeyNotFound", i, err)
		}
	}
	if _, err := rotate.Rewrap(ctx, acme.kms, "acme", envelopes(acmeMsgs), rotate.Options{Method: rotate.MethodUnwrapWrap}); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("Rewrap after deleting the key err = %v, want kms.ErrKeyNotFound", err)
	}
	bodies, errs := open(r, ids(globexMsgs), envelopes(globexMsgs))
	for i := range globexMsgs {
		if errs[i] != nil || !bytes.Equal(bodies[i], globexMsgs[i].body) {
			t.Fatalf("open(globex envelope %d) err = %v: another tenant's key must be unaffected", i, errs[i])
		}
	}
}

// TestVaultCryptoShredChat: wrapped DEKs are inline, so deleting a chat's records from the
// store destroys its wrapped DEKs. Model what is left if a copy of the bodies survives somewhere
// (a backup of the ciphertext column, a replica that kept only bodies): the nonce and ciphertext
// with their metadata, no key reference. No DEK the tenant's working KMS can still produce —
// every other scope's, a fresh one — opens them, and grafting another scope's key reference onto
// them fails in Vault or in AES-GCM. The other chats still open.
func TestVaultCryptoShredChat(t *testing.T) {
	ctx := context.Background()
	sink := &memSink{}
	acme := newVaultTenant(t, "acme", sink)
	r := tenants{"acme": acme.kms}
	shredded := seal(t, r, "acme", []string{"secret-chat"}, 3)
	kept := seal(t, r, "acme", []string{"general", "random"}, 2)

	// What survives of the shredded chat: metadata and body ciphertext, no wrapped DEK.
	type leftover struct {
		msg        message
		nonce      [envelope.NonceSize]byte
		ciphertext []byte
	}
	var left []leftover
	for _, m := range shredded {
		e := parse(t, m.envelope)
		left = append(left, leftover{msg: m, nonce: e.Nonce, ciphertext: bytes.Clone(e.Ciphertext)})
	}

	// Every DEK the tenant's KMS can still give: the kept chats' (unwrapped through Vault),
	// and a fresh one wrapped now for the shredded chat's own scope.
	var candidates [][]byte
	for _, m := range kept {
		e := parse(t, m.envelope)
		res, err := acme.kms.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: e.Key.WrappedDEK, Context: e.Scope.KMSContext()}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("Unwrap(kept chat DEK) err = %v / %v", err, res[0].Err)
		}
		candidates = append(candidates, res[0].DEK)
	}
	freshKey := seal(t, r, "acme", []string{"secret-chat"}, 1)[0] // same scope, new DEK (new manager)
	fe := parse(t, freshKey.envelope)
	res, err := acme.kms.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: fe.Key.WrappedDEK, Context: fe.Scope.KMSContext()}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	candidates = append(candidates, res[0].DEK)

	// Positive control: the original DEK of the shredded chat does open the leftovers, so the
	// failures below are due to the missing key, not to a broken test.
	orig := parse(t, shredded[0].envelope)
	ores, err := acme.kms.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: orig.Key.WrappedDEK, Context: orig.Scope.KMSContext()}})
	if err != nil || ores[0].Err != nil {
		t.Fatal(err, ores[0].Err)
	}
	if b, err := envelope.Open(aeadOf(t, ores[0].DEK), &envelope.Envelope{Version: envelope.Version1, Algorithm: envelope.AlgAES256GCM,
		Scope: left[0].msg.scope, Nonce: left[0].nonce, Ciphertext: left[0].ciphertext}, left[0].msg.id); err != nil || !bytes.Equal(b, left[0].msg.body) {
		t.Fatalf("control: the original DEK does not open the leftover: %v", err)
	}
	kms.Zero(ores[0].DEK)

	for _, l := range left {
		bare := &envelope.Envelope{Version: envelope.Version1, Algorithm: envelope.AlgAES256GCM, Scope: l.msg.scope, Nonce: l.nonce, Ciphertext: l.ciphertext}
		for j, d := range candidates {
			if _, err := envelope.Open(aeadOf(t, d), bare, l.msg.id); !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("leftover %s opened with candidate DEK %d: err = %v, want envelope.ErrOpen", l.msg.id, j, err)
			}
		}
		// Graft a kept chat's key reference: as the shredded scope Vault refuses the DEK (wrong
		// context); as the kept scope AES-GCM refuses the body (wrong AAD).
		for _, k := range kept[:1] {
			ke := parse(t, k.envelope)
			asShredded := &envelope.Envelope{Version: envelope.Version1, Algorithm: envelope.AlgAES256GCM, Scope: l.msg.scope, Key: ke.Key, Nonce: l.nonce, Ciphertext: l.ciphertext}
			asKept := &envelope.Envelope{Version: envelope.Version1, Algorithm: envelope.AlgAES256GCM, Scope: ke.Scope, Key: ke.Key, Nonce: l.nonce, Ciphertext: l.ciphertext}
			_, errs := open(r, []string{l.msg.id, l.msg.id}, [][]byte{asShredded.Marshal(), asKept.Marshal()})
			if !errors.Is(errs[0], kms.ErrInvalidCiphertext) || !errors.Is(errs[1], envelope.ErrOpen) {
				t.Fatalf("grafted key reference: errs = %v, %v; want kms.ErrInvalidCiphertext and envelope.ErrOpen", errs[0], errs[1])
			}
		}
	}
	for _, d := range candidates {
		kms.Zero(d)
	}
	bodies, errs := open(r, ids(kept), envelopes(kept))
	for i := range kept {
		if errs[i] != nil || !bytes.Equal(bodies[i], kept[i].body) {
			t.Fatalf("open(kept chat envelope %d) err = %v", i, errs[i])
		}
	}
}

// TestVaultStreamOnKafka streams a storage topic on a real Kafka, rewrapping one tenant's
// envelopes in a real Vault by unwrap+wrap, then retires version 1.
func TestVaultStreamOnKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	sink := &memSink{}
	acme, globex := newVaultTenant(t, "acme", sink), newVaultTenant(t, "globex", sink)
	streamScenario(t, brokers, acme.rotatable(), tenants{"globex": globex.kms}, rotate.MethodUnwrapWrap)
}
