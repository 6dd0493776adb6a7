package yandex

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	iampb "github.com/yandex-cloud/go-genproto/yandex/cloud/iam/v1"
	"github.com/yandex-cloud/go-sdk/v2/pkg/iamkey"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// AuthorizedKey is a Yandex Cloud service account's authorized key, exactly as `yc iam key create
// --output key.json` or the console writes it. Only the fields byok needs are kept; others are
// ignored.
type AuthorizedKey struct {
	ID               string `json:"id"`
	ServiceAccountID string `json:"service_account_id"`
	CreatedAt        string `json:"created_at,omitempty"`
	KeyAlgorithm     string `json:"key_algorithm,omitempty"` // RSA_2048 or RSA_4096
	PublicKey        string `json:"public_key,omitempty"`
	PrivateKey       string `json:"private_key"` // PEM; may carry Yandex's "PLEASE DO NOT REMOVE THIS LINE!" preamble
}

// String never prints the private key.
func (k AuthorizedKey) String() string {
	return fmt.Sprintf("authorized_key{id=%s service_account_id=%s private_key=<redacted>}", k.ID, k.ServiceAccountID)
}

// GoString keeps %#v from printing the private key too.
func (k AuthorizedKey) GoString() string { return k.String() }

// Credential is what a tenant pastes into settings for a Yandex Cloud KMS key. See the package
// comment for the accepted JSON.
type Credential struct {
	AuthorizedKey AuthorizedKey `json:"authorized_key"`
	// Endpoint, when set, is the one host:port that serves IAM token exchange, the KMS control
	// plane (SymmetricKeyService) and the KMS data plane (SymmetricCryptoService): a private
	// installation's API gateway, or an emulator. Empty means Yandex Cloud itself, with the
	// SDK's endpoint discovery.
	Endpoint string `json:"endpoint,omitempty"`
}

// String never prints the private key.
func (c Credential) String() string {
	ep := c.Endpoint
	if ep == "" {
		ep = "<yandex cloud>"
	}
	return fmt.Sprintf("yandex{endpoint=%s service_account_id=%s key_id=%s private_key=<redacted>}",
		ep, c.AuthorizedKey.ServiceAccountID, c.AuthorizedKey.ID)
}

// GoString keeps %#v from printing the private key too.
func (c Credential) GoString() string { return c.String() }

// Errors of ParseCredential name the field at fault and never quote the input: a credential
// pasted into the wrong box must not end up in a log line.
var errCredentialJSON = errors.New(`yandex: credential must be a service account authorized key JSON ` +
	`{"id", "service_account_id", "private_key", ...} or {"authorized_key": {...}, "endpoint": "host:port"}`)

// ParseCredential parses and checks a Yandex credential: either the authorized key JSON itself,
// or {"authorized_key": {...}, "endpoint": "host:port"}. The private key must parse as an RSA
// key. Errors never echo the input.
func ParseCredential(raw []byte) (Credential, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return Credential{}, errCredentialJSON
	}
	var c Credential
	if _, wrapped := top["authorized_key"]; wrapped {
		var w struct {
			AuthorizedKey json.RawMessage `json:"authorized_key"`
			Endpoint      string          `json:"endpoint"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			return Credential{}, errors.New(`yandex: credential wrapper accepts only "authorized_key" (an object) and "endpoint" (a string)`)
		}
		k, err := parseAuthorizedKey(w.AuthorizedKey)
		if err != nil {
			return Credential{}, err
		}
		c = Credential{AuthorizedKey: k, Endpoint: strings.TrimSpace(w.Endpoint)}
	} else {
		if _, ok := top["endpoint"]; ok {
			return Credential{}, errors.New(`yandex: credential: "endpoint" goes next to the key: {"authorized_key": {...}, "endpoint": "host:port"}`)
		}
		k, err := parseAuthorizedKey(raw)
		if err != nil {
			return Credential{}, err
		}
		c = Credential{AuthorizedKey: k}
	}
	if err := c.validate(); err != nil {
		return Credential{}, err
	}
	return c, nil
}

func parseAuthorizedKey(raw json.RawMessage) (AuthorizedKey, error) {
	var k AuthorizedKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return AuthorizedKey{}, errCredentialJSON
	}
	return k, nil
}

// validate checks what Yandex IAM and the SDK will need, so that a bad credential fails when it is
// saved rather than at the first wrap.
func (c Credential) validate() error {
	k := c.AuthorizedKey
	var missing []string
	if k.ID == "" {
		missing = append(missing, "id")
	}
	if k.ServiceAccountID == "" {
		missing = append(missing, "service_account_id")
	}
	if k.PrivateKey == "" {
		missing = append(missing, "private_key")
	}
	if len(missing) > 0 {
		return fmt.Errorf("yandex: credential: authorized key lacks %s (a service account's authorized key is needed)", strings.Join(missing, ", "))
	}
	if _, err := algorithm(k.KeyAlgorithm); err != nil {
		return err
	}
	if _, err := parsePrivateKey(k.PrivateKey); err != nil {
		return err
	}
	if c.Endpoint != "" {
		if _, err := splitEndpoint(c.Endpoint); err != nil {
			return err
		}
	}
	return nil
}

func algorithm(s string) (iampb.Key_Algorithm, error) {
	switch s {
	case "", "RSA_2048":
		return iampb.Key_RSA_2048, nil
	case "RSA_4096":
		return iampb.Key_RSA_4096, nil
	}
	return 0, errors.New("yandex: credential: key_algorithm must be RSA_2048 or RSA_4096")
}

// parsePrivateKey finds the PEM block (pem.Decode skips Yandex's preamble line) and parses it as
// PKCS#8 or PKCS#1 RSA.
func parsePrivateKey(s string) (*rsa.PrivateKey, error) {
	bad := errors.New("yandex: credential: private_key is not a PEM-encoded RSA private key")
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, bad
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if rk, ok := k.(*rsa.PrivateKey); ok {
			return rk, nil
		}
		return nil, bad
	}
	if rk, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return rk, nil
	}
	return nil, bad
}

// splitEndpoint checks host:port and returns the host.
func splitEndpoint(ep string) (string, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil || host == "" || strings.ContainsAny(ep, "/ ") {
		return "", errors.New(`yandex: credential: endpoint must be "host:port" (no scheme, no path)`)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", errors.New("yandex: credential: endpoint port must be a number from 1 to 65535")
	}
	return host, nil
}

// iamKey converts to the SDK's key type without going through its JSON parser, whose errors may
// quote input.
func (k AuthorizedKey) iamKey() *iamkey.Key {
	alg, _ := algorithm(k.KeyAlgorithm)
	key := &iamkey.Key{
		Id:           k.ID,
		Subject:      &iamkey.Key_ServiceAccountId{ServiceAccountId: k.ServiceAccountID},
		KeyAlgorithm: alg,
		PublicKey:    k.PublicKey,
		PrivateKey:   k.PrivateKey,
	}
	if t, err := time.Parse(time.RFC3339Nano, k.CreatedAt); err == nil {
		key.CreatedAt = timestamppb.New(t)
	}
	return key
}
