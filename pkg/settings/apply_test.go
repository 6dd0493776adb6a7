package settings

import (
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/dek"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/tenant"
)

func randomKey(t *testing.T) *Key {
	t.Helper()
	raw := make([]byte, KeySize)
	rand.Read(raw)
	k, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestApplyFollowsSavedSettings: saved settings switch a tenant on in the directory (before and
// after Apply is called), switching off and deleting work, and a record sealed with another
// settings key fails closed instead of leaving the tenant unencrypted.
func TestApplyFollowsSavedSettings(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-a"); err != nil {
		t.Fatal(err)
	}
	cred := []byte(fmt.Sprintf(`{"key_file": %q}`, keyFile))
	key := randomKey(t)
	record := func(tenantID string, enabled bool, k *Key, rev uint64) []byte {
		sealed, err := Seal(k, tenantID, cred)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(&byokv1.TenantSettings{SchemaVersion: SchemaVersion, TenantId: tenantID, Enabled: enabled,
			Provider: "local", KekId: "kek-a", SealedCredential: sealed, SettingsKeyId: k.ID(), Revision: rev})
		return b
	}
	view := control.NewView(zerolog.Nop())
	view.ApplySettings("early", record("early", true, key, 1)) // saved before this process started
	dir := tenant.NewDirectory(zerolog.Nop())
	Apply(view, dir, key, zerolog.Nop())
	if !dir.Enabled("early") {
		t.Fatal("settings saved before Apply are not applied")
	}

	view.ApplySettings("acme", record("acme", true, key, 1))
	k, err := dir.KMSFor("acme")
	if err != nil || k.KEKID() != "kek-a" {
		t.Fatalf("KMSFor(acme) after enabling = %v, %v", k, err)
	}
	// Re-saving the same settings (a new revision) is a change: every worker reopens the client
	// and drops its cached DEKs — how a customer flushes DEKs after rotating the KEK.
	var changed []string
	dir.OnChange(func(ids []string) { changed = append(changed, ids...) })
	view.ApplySettings("acme", record("acme", true, key, 1)) // the same revision again: no change
	view.ApplySettings("acme", record("acme", true, key, 2))
	if len(changed) != 1 || changed[0] != "acme" {
		t.Fatalf("changes after re-saving = %v, want [acme] once", changed)
	}
	view.ApplySettings("acme", record("acme", false, key, 3))
	if _, err := dir.KMSFor("acme"); !errors.Is(err, dek.ErrNoKMS) {
		t.Fatalf("KMSFor(acme) after disabling err = %v, want ErrNoKMS", err)
	}

	view.ApplySettings("globex", record("globex", true, randomKey(t), 1)) // sealed with another key
	if _, err := dir.KMSFor("globex"); !errors.Is(err, kms.ErrUnavailable) || !dir.Enabled("globex") {
		t.Fatalf("KMSFor(globex) with an unopenable credential err = %v, want ErrUnavailable (held, never clear)", err)
	}

	view.ApplySettings("acme", nil)
	if dir.Enabled("acme") || len(dir.Tenants()) != 2 {
		t.Fatalf("after the tombstone: tenants %v, want early and globex", dir.Tenants())
	}
}
