package cloudru_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/cloudru"
	"github.com/byok-io/byok/pkg/kms/cloudru/cloudruemu"
)

// A tenant's credential is the service-account access key JSON; here it points at the emulator.
func Example() {
	emu, err := cloudruemu.New()
	if err != nil {
		panic(err)
	}
	defer emu.Close()
	kek := emu.CreateKey()
	keyID, secret := emu.NewAccessKey()
	emu.Grant(keyID, kek)

	cred, err := cloudru.ParseCredential(fmt.Appendf(nil,
		`{"key_id": %q, "secret": %q, "kms_endpoint": %q, "iam_endpoint": %q}`, keyID, secret, emu.URL(), emu.URL()))
	if err != nil {
		panic(err)
	}
	c, err := cloudru.New(cred, kek, cloudru.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ctx := context.Background()
	dek := bytes.Repeat([]byte{7}, 32)
	scope := []byte("tenant|chat|20426")
	wrapped, err := c.Wrap(ctx, []kms.WrapRequest{{DEK: dek, Context: scope}})
	if err != nil || wrapped[0].Err != nil {
		panic(fmt.Sprint(err, wrapped))
	}
	back, err := c.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: wrapped[0].WrappedDEK, Context: scope}})
	if err != nil || back[0].Err != nil {
		panic(fmt.Sprint(err, back))
	}
	fmt.Println("KEK version:", wrapped[0].KEKVersion)
	fmt.Println("round trip:", bytes.Equal(back[0].DEK, dek))
	// Output:
	// KEK version: 1
	// round trip: true
}
