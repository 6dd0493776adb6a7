package yandex_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/yandex"
	"github.com/byok-io/byok/pkg/kms/yandex/yandexemu"
)

// A tenant's credential is their service account's authorized key JSON, here wrapped with an
// endpoint override that points at the emulator.
func Example() {
	emu, err := yandexemu.New()
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()
	_ = emu.CreateKey("abj-tenant-kek")
	keyJSON, _ := emu.NewAuthorizedKey("aje-byok")
	_ = emu.Grant("aje-byok", "abj-tenant-kek")

	pasted, _ := json.Marshal(map[string]any{"authorized_key": json.RawMessage(keyJSON), "endpoint": emu.Addr()})
	cred, err := yandex.ParseCredential(pasted)
	if err != nil {
		log.Fatal(err)
	}
	c, err := yandex.New(cred, "abj-tenant-kek", yandex.Options{Plaintext: true}) // plaintext: emulator only
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	dek := bytes.Repeat([]byte{7}, 32)
	scope := []byte("tenant-1|chat-9|20426")
	wrapped, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: dek, Context: scope}})
	if err != nil || wrapped[0].Err != nil {
		log.Fatal(err, wrapped)
	}
	back, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: wrapped[0].WrappedDEK, Context: scope}})
	if err != nil || back[0].Err != nil {
		log.Fatal(err, back)
	}
	fmt.Println("KEK version:", wrapped[0].KEKVersion)
	fmt.Println("round trip:", bytes.Equal(back[0].DEK, dek))
	// Output:
	// KEK version: abj-tenant-kek-v1
	// round trip: true
}
