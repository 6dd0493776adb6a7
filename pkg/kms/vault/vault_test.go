package vault_test

import (
	"fmt"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/internal/testenv"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/kmstest"
	"github.com/byok-io/byok/pkg/kms/vault"
)

func admin(t *testing.T) (*vaultapi.Client, string) {
	addr, token := testenv.Vault(t)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c, addr
}

// newKey creates a fresh transit key and returns its name.
func newKey(t *testing.T, c *vaultapi.Client, derived bool) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, fmt.Sprintf("conf-%s-%t", t.Name(), derived))
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	if _, err := c.Logical().Write("transit/keys/"+name, map[string]any{"type": "aes256-gcm96", "derived": derived}); err != nil {
		t.Fatal(err)
	}
	return name
}

func client(t *testing.T, addr, token, key string) kms.KMS {
	c, err := vault.New(vault.Credential{Address: addr, Token: token}, key, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	for _, derived := range []bool{true, false} {
		t.Run(fmt.Sprintf("derived=%t", derived), func(t *testing.T) {
			kmstest.Run(t, kmstest.Harness{
				New: func(t *testing.T) kms.KMS {
					c, addr := admin(t)
					return client(t, addr, c.Token(), newKey(t, c, derived))
				},
				Denied: func(t *testing.T) kms.KMS {
					c, addr := admin(t)
					key := newKey(t, c, derived)
					// A token that may read the key's metadata but neither encrypt nor decrypt.
					policy := "deny-" + key
					if err := c.Sys().PutPolicy(policy, fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read"] }`, key)); err != nil {
						t.Fatal(err)
					}
					tok, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true})
					if err != nil {
						t.Fatal(err)
					}
					return client(t, addr, tok.Auth.ClientToken, key)
				},
				Unavailable: func(t *testing.T) kms.KMS { return client(t, "http://127.0.0.1:1", "root", "any") },
				UnknownKey: func(t *testing.T) kms.KMS {
					c, addr := admin(t)
					return client(t, addr, c.Token(), "no-such-key")
				},
			})
		})
	}
}

func TestParseCredential(t *testing.T) {
	c, err := vault.ParseCredential([]byte(`{"address":"http://127.0.0.1:8200","token":"s.canary-token-123"}`))
	if err != nil || c.Mount != "transit" {
		t.Fatalf("ParseCredential = %+v, %v", c, err)
	}
	if strings.Contains(c.String(), "canary") || strings.Contains(fmt.Sprintf("%v", c), "canary") {
		t.Fatal("Credential.String prints the token")
	}
	for _, bad := range []string{`{}`, `not json`, `{"address":"x"}`, `{"address":"x","token":"y","extra":1}`} {
		if _, err := vault.ParseCredential([]byte(bad)); err == nil {
			t.Errorf("ParseCredential(%s) err = nil", bad)
		}
	}
	// A malformed credential's error must not echo the secret it was given.
	_, err = vault.ParseCredential([]byte(`{"address":"x","token":"s.canary-token-123","bogus":true}`))
	if err == nil || strings.Contains(err.Error(), "canary") {
		t.Fatalf("ParseCredential(bad) err = %v, want an error without the token", err)
	}
}
