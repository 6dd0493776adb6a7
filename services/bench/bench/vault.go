package bench

import (
	"context"
	"fmt"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
)

// createTransitKey creates an aes256-gcm96 transit key, derived so that each scope gets its own
// derived key (the setup README recommends to customers).
func createTransitKey(ctx context.Context, addr, token, name string) error {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return err
	}
	c.SetToken(token)
	name = strings.ReplaceAll(name, ".", "-")
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		return fmt.Errorf("vault: create transit key %s: %w", name, err)
	}
	return nil
}
