package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/internal/testenv"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/cloudru/cloudruemu"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/kms/yandex/yandexemu"
)

// TestValidateEachProvider saves settings as a customer would — provider, key id, credential
// JSON in that provider's format — and validates them with a real round trip (through the
// emulators for the clouds), then breaks each setting and checks the reason.
func TestValidateEachProvider(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, provider, keyID string, cred []byte) kms.KMS {
		t.Helper()
		k, err := registry.OpenWith(registry.Options{InsecureLoopback: true}, provider, keyID, cred)
		if err != nil {
			t.Fatalf("open %s: %v", provider, err)
		}
		return k
	}
	type setup struct {
		good, denied, missing kms.KMS
	}
	setups := map[string]func(t *testing.T) setup{
		"local": func(t *testing.T) setup {
			path := filepath.Join(t.TempDir(), "keys.json")
			_ = local.WriteKeyFile(path, "kek", "off")
			_ = local.Update(path, func(f *local.File) { f.Keys["off"].Disabled = true })
			cred, _ := json.Marshal(map[string]string{"key_file": path})
			return setup{open(t, "local", "kek", cred), open(t, "local", "off", cred), open(t, "local", "nope", cred)}
		},
		"yandex": func(t *testing.T) setup {
			yc := yandexemu.Start(t)
			_ = yc.CreateKey("kek")
			_ = yc.CreateKey("other")
			ak, err := yc.NewAuthorizedKey("sa-1")
			if err != nil {
				t.Fatal(err)
			}
			_ = yc.Grant("sa-1", "kek")
			cred, _ := json.Marshal(map[string]any{"authorized_key": json.RawMessage(ak), "endpoint": yc.Addr()})
			return setup{open(t, "yandex", "kek", cred), open(t, "yandex", "other", cred), open(t, "yandex", "nope", cred)}
		},
		"cloudru": func(t *testing.T) setup {
			cr, err := cloudruemu.New()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cr.Close() })
			id, secret := cr.NewAccessKey()
			kek, other := cr.CreateKey(), cr.CreateKey()
			cr.Grant(id, kek)
			cred, _ := json.Marshal(map[string]string{"key_id": id, "secret": secret, "kms_endpoint": cr.URL(), "iam_endpoint": cr.URL()})
			return setup{open(t, "cloudru", kek, cred), open(t, "cloudru", other, cred), open(t, "cloudru", "nope", cred)}
		},
	}
	for name, mk := range setups {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			if err := Validate(ctx, "acme", s.good); err != nil {
				t.Fatalf("Validate(good settings) = %v", err)
			}
			err := Validate(ctx, "acme", s.denied)
			if !errors.Is(err, kms.ErrAccessDenied) || !strings.Contains(err.Error(), "grant encrypt and decrypt") {
				t.Fatalf("Validate(key without permission) = %v, want access denied with advice", err)
			}
			err = Validate(ctx, "acme", s.missing)
			if err == nil || !(errors.Is(err, kms.ErrKeyNotFound) || errors.Is(err, kms.ErrAccessDenied)) {
				t.Fatalf("Validate(unknown key) = %v, want key not found (or denied, as clouds hide keys)", err)
			}
		})
	}
}

func TestValidateVault(t *testing.T) {
	addr, token := testenv.Vault(t)
	admin, err := vaultapi.NewClient(&vaultapi.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(token)
	key := fmt.Sprintf("validate-%d", time.Now().UnixNano())
	if _, err := admin.Logical().Write("transit/keys/"+key, map[string]any{"derived": true}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Sys().PutPolicy(key+"-read", fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read"] }`, key)); err != nil {
		t.Fatal(err)
	}
	weak, err := admin.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{key + "-read"}, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	open := func(tok, k string) kms.KMS {
		cred, _ := json.Marshal(map[string]string{"address": addr, "token": tok})
		c, err := registry.Open("vault", k, cred)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	if err := Validate(ctx, "acme", open(token, key)); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	if err := Validate(ctx, "acme", open(weak.Auth.ClientToken, key)); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("Validate(token without encrypt) = %v, want access denied", err)
	}
	// A mistyped key id is reported, not silently created by Transit's upsert.
	if err := Validate(ctx, "acme", open(token, key+"-typo")); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("Validate(typo) = %v, want key not found", err)
	}
	if s, _ := admin.Logical().Read("transit/keys/" + key + "-typo"); s != nil {
		t.Fatal("validation created the mistyped key")
	}
}
