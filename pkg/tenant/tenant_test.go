package tenant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
)

const canary = "s.CANARY-vault-token-91b2"

func TestDirectoryLookupAndFailClosed(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-a"); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := NewDirectory(zerolog.New(&logs))
	f, err := ParseFile([]byte(fmt.Sprintf(`{"tenants": {
		"acme":   {"enabled": true, "provider": "local", "kek_id": "kek-a", "credential": {"key_file": %q}},
		"broken": {"enabled": true, "provider": "vault", "kek_id": "k", "credential": {"address": "http://x", "token": %q, "oops": 1}},
		"off":    {"enabled": false}
	}}`, keyFile, canary)))
	if err != nil {
		t.Fatal(err)
	}
	d.Apply(f)
	if !d.Enabled("acme") || d.Enabled("off") || d.Enabled("nobody") {
		t.Fatal("Enabled answers wrong")
	}
	if k, err := d.KMSFor("acme"); err != nil || k.Provider() != "local" {
		t.Fatalf("KMSFor(acme) = %v, %v", k, err)
	}
	for _, id := range []string{"off", "nobody"} {
		if _, err := d.KMSFor(id); !errors.Is(err, dek.ErrNoKMS) {
			t.Errorf("KMSFor(%s) err = %v, want ErrNoKMS", id, err)
		}
	}
	// A tenant with byok on but an unusable credential fails closed: unavailable, never "no KMS".
	_, err = d.KMSFor("broken")
	if !errors.Is(err, kms.ErrUnavailable) || errors.Is(err, dek.ErrNoKMS) {
		t.Fatalf("KMSFor(broken) err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), canary) || strings.Contains(logs.String(), canary) {
		t.Fatal("the credential leaked into an error or a log line")
	}
	if s := fmt.Sprint(f.Tenants["broken"]); strings.Contains(s, canary) {
		t.Fatalf("Config.String prints the credential: %s", s)
	}
}

func TestParseFileRejects(t *testing.T) {
	for _, bad := range []string{
		`{"tenants": {"a": {"enabled": true}}}`,
		`{"tenants": {"a": {"enabled": true, "provider": "vault"}}}`,
		`{"tenants": {"a": {"enabled": true, "credential": {"token": "` + canary + `"` + "}}}",
	} {
		_, err := ParseFile([]byte(bad))
		if err == nil {
			t.Errorf("ParseFile(%s) err = nil", bad)
		} else if strings.Contains(err.Error(), canary) {
			t.Errorf("ParseFile error quotes the credential: %v", err)
		}
	}
}

func TestWatchFileAppliesChanges(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-a"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tenants.json")
	write := func(enabled bool) {
		s := fmt.Sprintf(`{"tenants": {"acme": {"enabled": %t, "provider": "local", "kek_id": "kek-a", "credential": {"key_file": %q}}}}`, enabled, keyFile)
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(false)
	d := NewDirectory(zerolog.Nop())
	if err := d.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	changed := make(chan []string, 4)
	d.OnChange(func(ids []string) { changed <- ids })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.WatchFile(ctx, path, 20*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	write(true)
	select {
	case ids := <-changed:
		if len(ids) != 1 || ids[0] != "acme" || !d.Enabled("acme") {
			t.Fatalf("after enabling: changed %v, enabled %t", ids, d.Enabled("acme"))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("enabling byok in the tenants file was not picked up at run time")
	}
}

// TestSettingsLayerWinsOverFile: saved settings override the tenants file entry, a later file
// reload does not undo them, and removing them brings the file entry back; subscribers hear of
// every change.
func TestSettingsLayerWinsOverFile(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := local.WriteKeyFile(keyFile, "kek-a", "kek-b"); err != nil {
		t.Fatal(err)
	}
	cred := []byte(fmt.Sprintf(`{"key_file": %q}`, keyFile))
	d := NewDirectory(zerolog.Nop())
	var changed []string
	d.OnChange(func(ids []string) { changed = append(changed, ids...) })
	file := File{Tenants: map[string]Config{"acme": {Enabled: true, Provider: "local", KEKID: "kek-a", Credential: cred}}}
	d.Apply(file)
	kekOf := func() string {
		k, err := d.KMSFor("acme")
		if err != nil {
			return "error: " + err.Error()
		}
		return k.KEKID()
	}
	if kekOf() != "kek-a" {
		t.Fatalf("file layer: KEK %s", kekOf())
	}
	d.SetTenant("acme", Config{Enabled: true, Provider: "local", KEKID: "kek-b", Credential: cred})
	if kekOf() != "kek-b" {
		t.Fatalf("settings layer: KEK %s, want kek-b", kekOf())
	}
	d.Apply(file) // the file is re-read: saved settings still win
	if kekOf() != "kek-b" {
		t.Fatalf("after a file reload: KEK %s, want kek-b", kekOf())
	}
	d.SetTenant("acme", Config{Enabled: false})
	if d.Enabled("acme") {
		t.Fatal("disabled in settings but still enabled")
	}
	d.SetTenant("globex", Config{Enabled: true, Provider: "local", KEKID: "kek-a", Credential: cred})
	if !d.Enabled("globex") {
		t.Fatal("a tenant known only from settings is not enabled")
	}
	d.RemoveTenant("acme")
	if kekOf() != "kek-a" {
		t.Fatalf("after RemoveTenant: KEK %s, want the file's kek-a", kekOf())
	}
	if want := []string{"acme", "acme", "acme", "globex", "acme"}; fmt.Sprint(changed) != fmt.Sprint(want) {
		t.Fatalf("changes = %v, want %v", changed, want)
	}
}
