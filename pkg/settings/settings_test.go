package settings

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// credCanary is a credential no error, String or %v output may ever contain.
const credCanary = `{"address":"https://vault.example:8200","token":"CANARY-CRED-settings-5d1e"}`

func testKey(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKeyFile(filepath.Join(t.TempDir(), "settings.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := testKey(t)
	sealed, err := Seal(k, "acme", []byte(credCanary))
	if err != nil {
		t.Fatalf("Seal() err = %v", err)
	}
	if bytes.Contains(sealed, []byte("CANARY")) {
		t.Fatal("sealed credential contains the credential in clear")
	}
	if sealed[0] != sealVersion {
		t.Fatalf("sealed[0] = %d, want version %d", sealed[0], sealVersion)
	}
	got, err := Open(k, "acme", sealed)
	if err != nil || string(got) != credCanary {
		t.Fatalf("Open() = %q, %v; want the credential", got, err)
	}
	again, _ := Seal(k, "acme", []byte(credCanary))
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of the same credential are equal: nonce is not random")
	}
}

func TestOpenRefuses(t *testing.T) {
	k := testKey(t)
	other := testKey(t)
	sealed, err := Seal(k, "acme", []byte(credCanary))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	badVersion := bytes.Clone(sealed)
	badVersion[0] = 2
	for name, tc := range map[string]struct {
		key    *Key
		tenant string
		sealed []byte
	}{
		"another tenant":   {k, "globex", sealed},
		"another key":      {other, "acme", sealed},
		"flipped bit":      {k, "acme", flipped},
		"unknown version":  {k, "acme", badVersion},
		"truncated":        {k, "acme", sealed[:10]},
		"empty":            {k, "acme", nil},
		"tenant id prefix": {k, "acm", sealed},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Open(tc.key, tc.tenant, tc.sealed)
			if !errors.Is(err, ErrNotOpened) {
				t.Fatalf("Open() = %q, %v; want ErrNotOpened", got, err)
			}
			if strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("error quotes the credential: %v", err)
			}
		})
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "settings.key")
	k, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := GenerateKeyFile(path); err == nil {
		t.Fatal("GenerateKeyFile overwrote an existing key file")
	}
	loaded, err := LoadKey(path)
	if err != nil || loaded.ID() != k.ID() || len(k.ID()) != 16 {
		t.Fatalf("LoadKey() = %v, %v; want id %s (16 hex digits)", loaded, err, k.ID())
	}
	sealed, _ := Seal(k, "acme", []byte("x"))
	if got, err := Open(loaded, "acme", sealed); err != nil || string(got) != "x" {
		t.Fatalf("credential sealed with the generated key does not open with the loaded one: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if s := fmt.Sprintf("%v %s %#v %+v", k, k, k, k); strings.Contains(s, strings.TrimSpace(string(raw))) {
		t.Fatalf("formatting a Key prints its material: %s", s)
	}

	secret := "CANARY-NOT-A-KEY-" + strings.Repeat("z", 20)
	for name, content := range map[string]string{
		"not base64": secret,
		"short":      base64.StdEncoding.EncodeToString([]byte("16 bytes only!!!")),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			os.WriteFile(p, []byte(content), 0o600)
			_, err := LoadKey(p)
			if err == nil || strings.Contains(err.Error(), "CANARY") || !strings.Contains(err.Error(), p) {
				t.Fatalf("LoadKey(%s) err = %v, want an error naming the file but not its content", name, err)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("LoadKey(missing file) succeeded")
	}
}

func TestToConfig(t *testing.T) {
	k := testKey(t)
	other := testKey(t)
	sealed, err := Seal(k, "acme", []byte(credCanary))
	if err != nil {
		t.Fatal(err)
	}
	valid := func() *byokv1.TenantSettings {
		return &byokv1.TenantSettings{SchemaVersion: 1, TenantId: "acme", Enabled: true, Provider: "vault", KekId: "acme-kek",
			SealedCredential: sealed, SettingsKeyId: k.ID(), UpdatedBy: "alice", Revision: 3}
	}
	c, err := ToConfig(valid(), k)
	if err != nil {
		t.Fatalf("ToConfig(valid) err = %v", err)
	}
	if !c.Enabled || c.Provider != "vault" || c.KEKID != "acme-kek" || string(c.Credential) != credCanary {
		t.Fatalf("ToConfig(valid) = %v (credential %d bytes), want enabled vault acme-kek with the credential", c, len(c.Credential))
	}
	if strings.Contains(fmt.Sprint(c), "CANARY") {
		t.Fatal("tenant.Config prints its credential")
	}

	disabled := valid()
	disabled.Enabled, disabled.SettingsKeyId, disabled.SealedCredential = false, "old-key", []byte{9, 9}
	if c, err := ToConfig(disabled, k); err != nil || c.Enabled || len(c.Credential) != 0 {
		t.Fatalf("ToConfig(disabled, stale credential) = %v, %v; want disabled, no credential, no error", c, err)
	}

	sealedForGlobex, _ := Seal(k, "globex", []byte(credCanary))
	for _, tc := range []struct {
		name   string
		edit   func(*byokv1.TenantSettings)
		key    *Key
		target error
		want   string
	}{
		{"nil record", nil, k, ErrInvalid, "empty record"},
		{"unknown schema", func(ts *byokv1.TenantSettings) { ts.SchemaVersion = 2 }, k, ErrInvalid, "schema_version 2"},
		{"zero schema", func(ts *byokv1.TenantSettings) { ts.SchemaVersion = 0 }, k, ErrInvalid, "schema_version 0"},
		{"no tenant", func(ts *byokv1.TenantSettings) { ts.TenantId = "" }, k, ErrInvalid, "tenant_id is empty"},
		{"no provider", func(ts *byokv1.TenantSettings) { ts.Provider = "" }, k, ErrInvalid, "without provider"},
		{"no kek", func(ts *byokv1.TenantSettings) { ts.KekId = "" }, k, ErrInvalid, "without provider and kek_id"},
		{"no credential", func(ts *byokv1.TenantSettings) { ts.SealedCredential = nil }, k, ErrInvalid, "without a credential"},
		{"other settings key id", func(ts *byokv1.TenantSettings) { ts.SettingsKeyId = other.ID() }, k, ErrKeyMismatch, other.ID()},
		{"other key, same id claimed", nil, other, ErrKeyMismatch, k.ID()},
		{"moved from another tenant", func(ts *byokv1.TenantSettings) { ts.SealedCredential = sealedForGlobex }, k, ErrNotOpened, "another tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ts *byokv1.TenantSettings
			if tc.name != "nil record" {
				ts = valid()
				if tc.edit != nil {
					tc.edit(ts)
				}
			}
			c, err := ToConfig(ts, tc.key)
			if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ToConfig() = %v, %v; want %v mentioning %q", c, err, tc.target, tc.want)
			}
			if strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("error quotes the credential: %v", err)
			}
			if len(c.Credential) != 0 || c.Enabled {
				t.Fatalf("ToConfig() returned a usable config with its error: %v", c)
			}
		})
	}
}

func TestSealLimits(t *testing.T) {
	k := testKey(t)
	for name, tc := range map[string]struct {
		key    *Key
		tenant string
		cred   []byte
	}{
		"no key":    {nil, "acme", []byte("x")},
		"no tenant": {k, "", []byte("x")},
		"empty":     {k, "acme", nil},
		"too large": {k, "acme", bytes.Repeat([]byte("C"), MaxCredentialLen+1)},
	} {
		if _, err := Seal(tc.key, tc.tenant, tc.cred); err == nil {
			t.Errorf("Seal(%s) succeeded, want an error", name)
		}
	}
}

func ExampleSeal() {
	key, _ := NewKey(bytes.Repeat([]byte{7}, KeySize)) // in a service: LoadKey(path)
	sealed, _ := Seal(key, "acme", []byte(`{"address":"https://vault.acme:8200","token":"…"}`))
	ts := &byokv1.TenantSettings{SchemaVersion: SchemaVersion, TenantId: "acme", Enabled: true, Provider: "vault",
		KekId: "acme-kek", SealedCredential: sealed, SettingsKeyId: key.ID()}
	c, err := ToConfig(ts, key)
	fmt.Println(c, err)
	// Output: {enabled=true provider=vault kek_id=acme-kek credential=<redacted>} <nil>
}
