package rotate_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/rotate"
	"github.com/byok-io/byok/pkg/scope"
)

// discard is an audit sink that keeps nothing (a real one is audit.NewKafkaSink).
type discard struct{}

func (discard) Write(context.Context, []byte, []byte) error { return nil }

// After the customer rotates the tenant's KEK, Rewrap moves stored envelopes to the new version.
func ExampleRewrap() {
	dir, _ := os.MkdirTemp("", "rotate-example")
	defer os.RemoveAll(dir)
	keys := filepath.Join(dir, "keys.json")
	_ = local.WriteKeyFile(keys, "acme-kek")
	k := audit.Wrap(local.New(keys, "acme-kek"), "acme", audit.NewLog(discard{}, "example"),
		audit.Access{ActorService: "example", Purpose: "rewrap"})

	// The encryptor sealed a message under KEK version 1.
	m := dek.New(tenants{"acme": k}, dek.Config{})
	key, _ := m.Key(context.Background(), scope.Scope{TenantID: "acme", ChatID: "general", Day: 20426})
	env, _ := key.Seal("msg-1", []byte("hello"))
	m.Close()

	// The customer rotates the KEK: version 2 becomes the latest.
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	_ = local.Update(keys, func(f *local.File) {
		f.Keys["acme-kek"].Versions["2"] = base64.StdEncoding.EncodeToString(raw)
		f.Keys["acme-kek"].Primary = "2"
	})

	res, err := rotate.Rewrap(context.Background(), k, "acme", [][]byte{env}, rotate.Options{Method: rotate.MethodRewrap})
	if err != nil || res[0].Err != nil {
		fmt.Println("rewrap failed:", err, res[0].Err)
		return
	}
	fmt.Printf("KEK version %s → %s, envelope %d bytes → %d bytes\n", res[0].FromVersion, res[0].ToVersion, len(env), len(res[0].Envelope))
	// Output: KEK version 1 → 2, envelope 139 bytes → 139 bytes
}
