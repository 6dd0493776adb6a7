// Package registry opens a KMS client from what a tenant configured: provider name, KEK id and
// the credential JSON. It is the one place that knows every provider package; the rest of byok
// sees only kms.KMS.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/cloudru"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/kms/vault"
	"github.com/byok-io/byok/pkg/kms/yandex"
)

// Options are process-level settings of the operator (never of a tenant).
type Options struct {
	// InsecureLoopback lets gRPC providers speak plaintext to a KMS endpoint on a loopback address
	// (the emulators in tests and demos). Off in production: DEKs travel in those requests.
	InsecureLoopback bool
}

// opener builds a client for one KEK from a credential.
type opener func(kekID string, credential []byte, opts Options) (kms.KMS, error)

var openers = map[string]opener{
	local.Provider:   openLocal,
	vault.Provider:   openVault,
	cloudru.Provider: openCloudru,
	yandex.Provider:  openYandex,
}

// Providers lists the provider names this build supports.
func Providers() []string {
	names := make([]string, 0, len(openers))
	for n := range openers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrUnknownProvider is returned for a provider name this build does not know.
var ErrUnknownProvider = errors.New("kms: unknown provider")

// Open returns a client for kekID of provider, authenticated with credential. It makes no KMS
// call; use Describe or a wrap/unwrap round trip to validate. Errors never quote the credential.
func Open(provider, kekID string, credential []byte) (kms.KMS, error) {
	return OpenWith(Options{}, provider, kekID, credential)
}

// OpenWith is Open with operator options.
func OpenWith(opts Options, provider, kekID string, credential []byte) (kms.KMS, error) {
	open, ok := openers[provider]
	if !ok {
		return nil, fmt.Errorf("%w %q (have %v)", ErrUnknownProvider, provider, Providers())
	}
	if kekID == "" {
		return nil, fmt.Errorf("kms: %s: KEK id is required", provider)
	}
	return open(kekID, credential, opts)
}

// localCredential is the "credential" of the dev-only local provider: where its key file is.
type localCredential struct {
	KeyFile string `json:"key_file"`
}

func openLocal(kekID string, credential []byte, _ Options) (kms.KMS, error) {
	var c localCredential
	if err := json.Unmarshal(credential, &c); err != nil || c.KeyFile == "" {
		return nil, errors.New(`kms: local: credential must be {"key_file": "<path>"}`)
	}
	return local.New(c.KeyFile, kekID), nil
}

func openVault(kekID string, credential []byte, _ Options) (kms.KMS, error) {
	c, err := vault.ParseCredential(credential)
	if err != nil {
		return nil, err
	}
	return vault.New(c, kekID, vault.Options{})
}

func openCloudru(kekID string, credential []byte, _ Options) (kms.KMS, error) {
	c, err := cloudru.ParseCredential(credential)
	if err != nil {
		return nil, err
	}
	return cloudru.New(c, kekID, cloudru.Options{})
}

func openYandex(kekID string, credential []byte, opts Options) (kms.KMS, error) {
	c, err := yandex.ParseCredential(credential)
	if err != nil {
		return nil, err
	}
	return yandex.New(c, kekID, yandex.Options{Plaintext: opts.InsecureLoopback && isLoopback(c.Endpoint)})
}

// isLoopback reports whether a host:port endpoint names a loopback address.
func isLoopback(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
