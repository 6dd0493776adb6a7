package tenant

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/scope"
)

// ValidationChat is the chat id of the scope a validation round trip binds its test DEK to, so
// that validation calls are recognisable in the customer's KMS audit log and in byok's.
const ValidationChat = "byok-settings-validation"

// Validate proves that a tenant's settings work: it describes the key (so a mistyped key id is
// not silently created by a KMS that upserts, as Vault Transit does for broad tokens), then wraps
// a fresh random test DEK through k and unwraps it again — what saving the settings must do
// before byok is turned on. The error says, in words
// a customer's security team can act on, what to fix; it never quotes the credential.
func Validate(ctx context.Context, tenantID string, k kms.KMS) error {
	test := make([]byte, 32)
	if _, err := rand.Read(test); err != nil {
		return err
	}
	defer kms.Zero(test)
	if _, err := k.Describe(ctx); err != nil {
		return explain("describe the key", k, err)
	}
	kctx := scope.Scope{TenantID: tenantID, ChatID: ValidationChat, Day: scope.DayOf(time.Now())}.KMSContext()
	w, err := k.Wrap(ctx, []kms.WrapRequest{{DEK: test, Context: kctx}})
	if err == nil && len(w) == 1 {
		err = w[0].Err
	}
	if err != nil {
		return explain("wrap a test key", k, err)
	}
	u, err := k.Unwrap(ctx, []kms.UnwrapRequest{{WrappedDEK: w[0].WrappedDEK, Context: kctx}})
	if err == nil && len(u) == 1 {
		err = u[0].Err
	}
	if err != nil {
		return explain("unwrap the test key", k, err)
	}
	defer kms.Zero(u[0].DEK)
	if !bytes.Equal(u[0].DEK, test) {
		return fmt.Errorf("%s key %s: the KMS returned a different key than it was given", k.Provider(), k.KEKID())
	}
	return nil
}

func explain(step string, k kms.KMS, err error) error {
	what := "failed"
	switch {
	case errors.Is(err, kms.ErrAccessDenied):
		what = "was refused: the credential may not use this key (grant encrypt and decrypt on it), or the key is disabled"
	case errors.Is(err, kms.ErrKeyNotFound):
		what = "found no such key: check the KMS Key ID"
	case errors.Is(err, kms.ErrUnavailable):
		what = "could not reach the KMS: check the endpoint and that byok may connect to it"
	case errors.Is(err, kms.ErrInvalidCiphertext):
		what = "got a wrapped key back that the KMS then refused to unwrap"
	}
	return fmt.Errorf("%s key %s: %s %s: %w", k.Provider(), k.KEKID(), step, what, err)
}
