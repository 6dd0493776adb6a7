// Package vault is the KMS provider for HashiCorp Vault's Transit secrets engine, through
// github.com/hashicorp/vault/api.
//
// Wrap is one transit `encrypt` call with `batch_input`; Unwrap is one `decrypt` call with
// `batch_input`; Rewrap (kms.Rewrapper) is one `rewrap` call with `batch_input`. Each item
// carries the scope's KMS context as both `context` (on a derived key, derived=true, Vault
// derives a distinct key per scope: the setup we recommend) and `associated_data` (AES-GCM AAD,
// checked on any key); see bindContext. Per-item errors in `batch_results` are kept per item.
//
// The client never retries by itself (Vault's client retries are turned off): retry with backoff
// is a wrapper on the KMS seam, and denied or not-found answers must not be retried.
//
// Admin (admin.go) is the customer security team's side: rotate a key, retire or trim old
// versions, delete a key. byok's services are not meant to hold a token that may do those.
package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/kms"
)

// Provider is the provider name of this package.
const Provider = "vault"

// Credential is what a tenant pastes into settings for a Vault KEK (JSON).
type Credential struct {
	Address   string `json:"address"`             // e.g. https://vault.customer.example:8200
	Token     string `json:"token"`               // a token whose policy allows encrypt/decrypt on the key
	Mount     string `json:"mount,omitempty"`     // transit mount path (default "transit")
	Namespace string `json:"namespace,omitempty"` // Vault Enterprise namespace, if any
}

// String never prints the token.
func (c Credential) String() string {
	return fmt.Sprintf("vault{address=%s mount=%s token=<redacted>}", c.Address, c.Mount)
}

// ParseCredential parses and checks a Vault credential JSON.
func ParseCredential(raw []byte) (Credential, error) {
	var c Credential
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Credential{}, errors.New("vault: credential is not valid JSON of {address, token, mount, namespace}")
	}
	if c.Address == "" || c.Token == "" {
		return Credential{}, errors.New("vault: credential needs address and token")
	}
	if c.Mount == "" {
		c.Mount = "transit"
	}
	return c, nil
}

// Options tune the client.
type Options struct {
	// Timeout bounds one HTTP call to Vault (default 10s).
	Timeout time.Duration
}

// Client is one transit key reached with one credential.
type Client struct {
	api   *vaultapi.Client
	mount string
	key   string
}

var (
	_ kms.KMS       = (*Client)(nil)
	_ kms.Rewrapper = (*Client)(nil)
)

// New returns a client for transit key keyName. It makes no call yet.
func New(cred Credential, keyName string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = cred.Address
	cfg.MaxRetries = 0
	cfg.Timeout = opts.Timeout
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault: config: %w", cfg.Error)
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	c.SetToken(cred.Token)
	if cred.Namespace != "" {
		c.SetNamespace(cred.Namespace)
	}
	mount := strings.Trim(cred.Mount, "/")
	if mount == "" {
		mount = "transit"
	}
	return &Client{api: c, mount: mount, key: keyName}, nil
}

// Provider implements kms.KMS.
func (c *Client) Provider() string { return Provider }

// KEKID implements kms.KMS.
func (c *Client) KEKID() string { return c.key }

// Close implements kms.KMS.
func (c *Client) Close() error { return nil }

// Describe implements kms.KMS: reads transit/keys/<name> (needs `read` on that path).
func (c *Client) Describe(ctx context.Context) (kms.KeyInfo, error) {
	s, err := c.api.Logical().ReadWithContext(ctx, c.mount+"/keys/"+c.key)
	if err != nil {
		return kms.KeyInfo{}, mapErr("describe", c.key, err)
	}
	if s == nil || s.Data == nil {
		return kms.KeyInfo{}, fmt.Errorf("vault: describe %s: %w", c.key, kms.ErrKeyNotFound)
	}
	latest := fmt.Sprint(s.Data["latest_version"])
	if n, ok := s.Data["latest_version"].(json.Number); ok {
		latest = n.String()
	}
	return kms.KeyInfo{Provider: Provider, KEKID: c.key, LatestVersion: latest}, nil
}

type batchResult struct {
	Ciphertext string      `json:"ciphertext"`
	Plaintext  string      `json:"plaintext"`
	KeyVersion json.Number `json:"key_version"`
	Error      string      `json:"error"`
}

// batch sends one transit batch call and returns its batch_results, one per item.
func (c *Client) batch(ctx context.Context, op string, items []map[string]string) ([]batchResult, error) {
	body, err := json.Marshal(map[string]any{"batch_input": items})
	if err != nil {
		return nil, err
	}
	// Not Logical().WriteRawWithContext: it cancels its timeout context before returning, so a
	// large batch_results body can be cut off mid-read. RawRequestWithContext leaves the context
	// to expire on its own (its documented reason), and the body is read in full below.
	r := c.api.NewRequest(http.MethodPost, "/v1/"+c.mount+"/"+op+"/"+c.key)
	r.BodyBytes = body
	resp, err := c.api.RawRequestWithContext(ctx, r) //nolint:staticcheck // see above
	var out struct {
		Data struct {
			BatchResults []batchResult `json:"batch_results"`
		} `json:"data"`
	}
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if rerr != nil && err == nil {
			return nil, fmt.Errorf("vault: %s %s: reading response: %w: %v", op, c.key, kms.ErrUnavailable, rerr)
		}
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		// Vault ≥1.14 answers 400 when items fail but still sends batch_results: keep them.
		if dec.Decode(&out) == nil && len(out.Data.BatchResults) == len(items) {
			return out.Data.BatchResults, nil
		}
	}
	if err != nil {
		return nil, mapErr(op, c.key, err)
	}
	return nil, fmt.Errorf("vault: %s %s: HTTP %d with %d results for %d items: %w", op, c.key, resp.StatusCode, len(out.Data.BatchResults), len(items), kms.ErrUnavailable)
}

// Wrap implements kms.KMS with one transit encrypt call.
func (c *Client) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	items := make([]map[string]string, len(reqs))
	for i, r := range reqs {
		items[i] = map[string]string{"plaintext": base64.StdEncoding.EncodeToString(r.DEK)}
		bindContext(items[i], r.Context)
	}
	res, err := c.batch(ctx, "encrypt", items)
	if err != nil {
		return nil, err
	}
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range res {
		if r.Error != "" || r.Ciphertext == "" {
			out[i].Err = itemErr("encrypt", r.Error)
			continue
		}
		out[i].WrappedDEK = []byte(r.Ciphertext)
		out[i].KEKVersion = r.KeyVersion.String()
		if out[i].KEKVersion == "" {
			out[i].KEKVersion = versionOf(r.Ciphertext)
		}
	}
	return out, nil
}

// Unwrap implements kms.KMS with one transit decrypt call.
func (c *Client) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	items := make([]map[string]string, len(reqs))
	for i, r := range reqs {
		items[i] = map[string]string{"ciphertext": string(r.WrappedDEK)}
		bindContext(items[i], r.Context)
	}
	res, err := c.batch(ctx, "decrypt", items)
	if err != nil {
		return nil, err
	}
	out := make([]kms.UnwrapResult, len(reqs))
	for i, r := range res {
		if r.Error != "" {
			out[i].Err = itemErr("decrypt", r.Error)
			continue
		}
		dek, err := base64.StdEncoding.DecodeString(r.Plaintext)
		if err != nil {
			out[i].Err = fmt.Errorf("vault: decrypt: plaintext is not base64: %w", kms.ErrInvalidCiphertext)
			continue
		}
		out[i].DEK = dek
	}
	return out, nil
}

// Rewrap implements kms.Rewrapper with one transit rewrap call: Vault decrypts and re-encrypts
// each wrapped DEK under the key's latest version, so the DEK never leaves Vault. Each item
// carries the same context and associated_data as Wrap and Unwrap (bindContext).
//
// Measured on Vault 1.13.2 (upstream hashicorp/vault#29532 and #31791 report the same for later
// releases): the rewrap endpoint ignores associated_data, so a wrapped DEK made by Wrap (which
// always binds associated_data) fails every rewrap with "message authentication failed"
// (kms.ErrInvalidCiphertext). Rewrap works on ciphertexts bound only by a derived key's context,
// and will work on byok's own once Vault honours associated_data on rewrap; until then rotate
// with unwrap+wrap (pkg/rotate, docs/rotation.md).
func (c *Client) Rewrap(ctx context.Context, reqs []kms.RewrapRequest) ([]kms.RewrapResult, error) {
	items := make([]map[string]string, len(reqs))
	for i, r := range reqs {
		items[i] = map[string]string{"ciphertext": string(r.WrappedDEK)}
		bindContext(items[i], r.Context)
	}
	res, err := c.batch(ctx, "rewrap", items)
	if err != nil {
		return nil, err
	}
	out := make([]kms.RewrapResult, len(reqs))
	for i, r := range res {
		if r.Error != "" || r.Ciphertext == "" {
			out[i].Err = itemErr("rewrap", r.Error)
			if strings.Contains(r.Error, "message authentication failed") {
				out[i].Err = fmt.Errorf("%w (a wrong context, or a Vault whose rewrap ignores associated_data: see docs/rotation.md)", out[i].Err)
			}
			continue
		}
		out[i].WrappedDEK = []byte(r.Ciphertext)
		out[i].KEKVersion = r.KeyVersion.String()
		if out[i].KEKVersion == "" {
			out[i].KEKVersion = versionOf(r.Ciphertext)
		}
	}
	return out, nil
}

// bindContext sends the scope's KMS context both as `context` (a derived key derives a per-scope
// key from it; a non-derived key ignores it) and as `associated_data` (AES-GCM AAD, checked by
// both kinds). Measured on Vault 1.13.2: a mismatch in either fails a derived key's decrypt, a
// mismatch in associated_data fails a non-derived key's. So no Describe call is needed to learn
// the key's kind — every Vault request byok makes is one the audit wrapper sees.
func bindContext(item map[string]string, ctx []byte) {
	enc := base64.StdEncoding.EncodeToString(ctx)
	item["context"] = enc
	item["associated_data"] = enc
}

// versionOf reads N from "vault:vN:…".
func versionOf(ct string) string {
	parts := strings.SplitN(ct, ":", 3)
	if len(parts) == 3 && strings.HasPrefix(parts[1], "v") {
		if _, err := strconv.Atoi(parts[1][1:]); err == nil {
			return parts[1][1:]
		}
	}
	return ""
}

// itemErr maps a batch item's error text. Vault's per-item errors are user errors (bad
// ciphertext, wrong context, version too old); authorization failures fail the whole call.
func itemErr(op, msg string) error {
	switch {
	case strings.Contains(msg, "permission denied"):
		return fmt.Errorf("vault: %s: %s: %w", op, msg, kms.ErrAccessDenied)
	case strings.Contains(msg, "not found"):
		return fmt.Errorf("vault: %s: %s: %w", op, msg, kms.ErrKeyNotFound)
	default:
		return fmt.Errorf("vault: %s: %s: %w", op, msg, kms.ErrInvalidCiphertext)
	}
}

// mapErr maps a whole-call failure onto the KMS sentinels.
func mapErr(op, key string, err error) error {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrAccessDenied)
		case re.StatusCode == http.StatusNotFound, strings.Contains(msg, "not found"):
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrKeyNotFound)
		case re.StatusCode == http.StatusBadRequest && strings.Contains(msg, "disabled"):
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrAccessDenied)
		case re.StatusCode == http.StatusBadRequest:
			return fmt.Errorf("vault: %s %s: %s: %w", op, key, msg, kms.ErrInvalidCiphertext)
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
			return fmt.Errorf("vault: %s %s: HTTP %d: %w", op, key, re.StatusCode, kms.ErrUnavailable)
		}
		return fmt.Errorf("vault: %s %s: HTTP %d %s: %w", op, key, re.StatusCode, msg, kms.ErrUnavailable)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("vault: %s %s: %w: %v", op, key, kms.ErrUnavailable, err)
	}
	return fmt.Errorf("vault: %s %s: %w: %v", op, key, kms.ErrUnavailable, err)
}
