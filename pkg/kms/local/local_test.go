package local_test

import (
	"path/filepath"
	"testing"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/kmstest"
	"github.com/byok-io/byok/pkg/kms/local"
)

func TestConformance(t *testing.T) {
	keyFile := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "keys.json")
		if err := local.WriteKeyFile(p, "kek-a", "kek-disabled"); err != nil {
			t.Fatal(err)
		}
		if err := local.Update(p, func(f *local.File) { f.Keys["kek-disabled"].Disabled = true }); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kmstest.Run(t, kmstest.Harness{
		New:         func(t *testing.T) kms.KMS { return local.New(keyFile(t), "kek-a") },
		Denied:      func(t *testing.T) kms.KMS { return local.New(keyFile(t), "kek-disabled") },
		Unavailable: func(t *testing.T) kms.KMS { return local.New(filepath.Join(t.TempDir(), "missing.json"), "kek-a") },
		UnknownKey:  func(t *testing.T) kms.KMS { return local.New(keyFile(t), "no-such-kek") },
	})
}
