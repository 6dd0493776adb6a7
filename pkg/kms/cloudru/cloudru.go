// Package cloudru is the KMS provider for Cloud.ru Key Management (Evolution platform; formerly
// SberCloud "Cloud Key Manager"), over its public REST API with the standard library only: there
// is no Cloud.ru Go SDK.
//
// Wrap is one POST /v1/encrypt per DEK and Unwrap one POST /v1/decrypt per wrapped DEK, with the
// scope's KMS context as AAD; the API has no batch call, so a batch runs as bounded concurrent
// calls (Options.Concurrency, default 16), results in request order, each item with its own
// error. The wrapped DEK is the ciphertext string exactly as Cloud.ru returns it; the KEK version
// is the response's keyVersionId. Describe reads the key and its versions.
//
// Authentication: the tenant's credential is a service-account access key (key id + secret).
// It is exchanged at Cloud.ru IAM for a bearer token, which is cached until shortly before it
// expires (a fifth of its lifetime, at most a minute) and shared by concurrent calls; a 401 from
// the KMS refreshes the token once and repeats that one call.
//
// Errors: 401/403 → kms.ErrAccessDenied; 404 → kms.ErrKeyNotFound; 408/429/5xx, network errors
// and timeouts → kms.ErrUnavailable; 400 on decrypt → kms.ErrInvalidCiphertext; a disabled key
// (400 with gRPC code FAILED_PRECONDITION, or a message saying "disabled") → kms.ErrAccessDenied.
// The client never retries unavailable calls itself: retry with backoff is a wrapper on the KMS
// seam, and denied or not-found answers must not be retried. Tokens, secrets, plaintext and DEKs
// never appear in errors or logs (this package logs nothing).
//
// # What was confirmed from public documentation, and what is assumed
//
// Confirmed (Cloud.ru public documentation, from stored copies of the pages below):
//   - IAM token exchange: POST https://iam.api.cloud.ru/api/v1/auth/token with JSON
//     {"keyId": "<Key ID>", "secret": "<Key Secret>"}; the answer carries "access_token",
//     "expires_in" (seconds; the example shows 3600), "token_type": "Bearer" (plus id_token,
//     refresh_token, refresh_expires_in, scopes, not_before), and the token goes in
//     "Authorization: Bearer <token>". Sources: "Аутентификация в API Cloud.ru"
//     (https://cloud.ru/docs/console_api/ug/topics/guides__auth_api), "Аутентификация в API в
//     Cloud DNS" (https://cloud.ru/docs/clouddns/ug/topics/api-ref_authentication.html, which shows
//     the full answer), "Ключи доступа" (https://cloud.ru/docs/console_api/ug/topics/guides__service_accounts_key.html).
//   - Encrypt: POST https://kms.api.cloud.ru/v1/encrypt (older docs: kms.api.sbercloud.ru) with a
//     Bearer token and JSON fields "keyId", "keyVersionId" (a string in the example, "1"),
//     "plaintext" (base64) and a base64 AAD. Source: Key Management "Быстрый старт"
//     (https://cloud.ru/docs/kms/ug/topics/quickstart).
//   - Keys: GET /v1/keys/{keyId} returns one key; GET /v1/keys/{keyId}/versions with query
//     parameters page.limit (max 1000) and page.offset returns {"versions": [...]} whose "id" is
//     an integer. Sources: "Ключи" (https://cloud.ru/docs/kms/ug/topics/api-ref_key.html) and
//     "Версия ключа" (https://cloud.ru/docs/kms/ug/topics/api-ref_version.html). The dotted query
//     parameters are the mark of a gRPC-gateway service.
//
// Assumed (the stored copies cut off before these parts; check them against the real service):
//   - The AAD field is named "aad".
//   - Encrypt answers {"keyId", "keyVersionId", "ciphertext"} (ciphertext a string, base64);
//     keyVersionId may be a string or a number and both are accepted. When keyVersionId is left
//     out of the request (Options.KeyVersionID empty) the primary version is used.
//   - Decrypt is POST /v1/decrypt with {"keyId", "ciphertext", "aad"} and answers
//     {"keyId", "keyVersionId", "plaintext"}, the plaintext base64; the ciphertext names its own
//     key version (as in Yandex, AWS and Google KMS), so decrypt sends no keyVersionId. If the
//     real API needs keyVersionId on decrypt, it is the envelope's KEK version, which would have
//     to be passed down.
//   - A key's state is reported as "state" or "status" by GET /v1/keys/{keyId}; a value
//     containing "DISABLED" or "INACTIVE" is treated as disabled.
//   - Error bodies are gRPC-gateway statuses {"code": <gRPC code>, "message": "…"}; a disabled
//     key answers 400 with code 9 (FAILED_PRECONDITION). Unparseable bodies are tolerated.
//   - Size limits: none are published, so plaintext is capped at 32 KiB and AAD at 8 KiB (the
//     Yandex limits), checked before any call.
package cloudru

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/byok-io/byok/pkg/kms"
)

// Provider is the provider name of this package.
const Provider = "cloudru"

// Public endpoints of Cloud.ru, used when the credential names none.
const (
	DefaultKMSEndpoint = "https://kms.api.cloud.ru"
	DefaultIAMEndpoint = "https://iam.api.cloud.ru"
)

// Limits checked before any call (Cloud.ru publishes none; these are Yandex's, see the package
// comment). A DEK is 32 bytes and a scope context well under 1 KiB, so byok never comes near.
const (
	MaxPlaintext = 32 << 10
	MaxAAD       = 8 << 10
)

// DefaultConcurrency is how many KMS calls one Wrap or Unwrap keeps in flight by default.
const DefaultConcurrency = 16

// maxResponse bounds any response body read; maxWrapped the wrapped DEK Unwrap accepts (the
// base64 ciphertext of a MaxPlaintext plaintext is about 44 KiB).
const (
	maxResponse = 1 << 20
	maxWrapped  = 64 << 10
)

// Credential is what a tenant pastes into settings for a Cloud.ru KEK (JSON): a service-account
// access key, and optionally the endpoints of a private installation.
//
//	{"key_id": "…", "secret": "…", "kms_endpoint": "https://kms.api.cloud.ru", "iam_endpoint": "https://iam.api.cloud.ru"}
type Credential struct {
	KeyID       string `json:"key_id"`                 // access key "Key ID" (the login)
	Secret      string `json:"secret"`                 // access key "Key Secret" (the password)
	KMSEndpoint string `json:"kms_endpoint,omitempty"` // default DefaultKMSEndpoint
	IAMEndpoint string `json:"iam_endpoint,omitempty"` // default DefaultIAMEndpoint
}

// String never prints the secret.
func (c Credential) String() string {
	return fmt.Sprintf("cloudru{key_id=%s secret=<redacted> kms_endpoint=%s iam_endpoint=%s}", c.KeyID, c.KMSEndpoint, c.IAMEndpoint)
}

// GoString keeps %#v from printing the secret too.
func (c Credential) GoString() string { return c.String() }

// ParseCredential parses and checks a Cloud.ru credential JSON, filling in default endpoints.
// Its errors never quote the input.
func ParseCredential(raw []byte) (Credential, error) {
	var c Credential
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Credential{}, errors.New("cloudru: credential is not valid JSON of {key_id, secret, kms_endpoint, iam_endpoint}")
	}
	if dec.More() {
		return Credential{}, errors.New("cloudru: credential has data after the JSON object")
	}
	if c.KMSEndpoint == "" {
		c.KMSEndpoint = DefaultKMSEndpoint
	}
	if c.IAMEndpoint == "" {
		c.IAMEndpoint = DefaultIAMEndpoint
	}
	if err := c.validate(); err != nil {
		return Credential{}, err
	}
	return c, nil
}

func (c Credential) validate() error {
	if c.KeyID == "" || c.Secret == "" {
		return errors.New("cloudru: credential needs key_id and secret")
	}
	if strings.ContainsFunc(c.KeyID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return errors.New("cloudru: credential key_id has control characters")
	}
	for _, e := range []struct{ name, value string }{{"kms_endpoint", c.KMSEndpoint}, {"iam_endpoint", c.IAMEndpoint}} {
		if err := checkEndpoint(e.value); err != nil {
			return fmt.Errorf("cloudru: credential %s: %w", e.name, err)
		}
	}
	return nil
}

// checkEndpoint accepts https URLs, and plain http only on loopback (tests, local emulators): a
// bearer token must not cross a network in clear text.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must be an absolute URL like https://host[:port][/path]")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return errors.New("plain http is allowed only for loopback hosts; use https")
	}
	return errors.New("scheme must be https")
}

// Options tune the client. The zero value is the default.
type Options struct {
	// Concurrency bounds the KMS calls one Wrap or Unwrap keeps in flight (default 16).
	Concurrency int
	// Timeout bounds one HTTP call, token exchange included (default 10s).
	Timeout time.Duration
	// KeyVersionID pins the key version Wrap encrypts with. Empty: the key's primary version.
	KeyVersionID string
}

func (o *Options) setDefaults() error {
	switch {
	case o.Concurrency < 0:
		return errors.New("cloudru: Options.Concurrency must not be negative")
	case o.Timeout < 0:
		return errors.New("cloudru: Options.Timeout must not be negative")
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	return nil
}

// Client is one Cloud.ru KMS key reached with one access key. It is safe for concurrent use.
type Client struct {
	kekID       string
	version     string
	kmsURL      string // without trailing slash
	concurrency int
	http        *http.Client
	tokens      *tokenSource
}

var _ kms.KMS = (*Client)(nil)

// New returns a client for KMS key kekID. It makes no call yet.
func New(cred Credential, kekID string, opts Options) (*Client, error) {
	if cred.KMSEndpoint == "" {
		cred.KMSEndpoint = DefaultKMSEndpoint
	}
	if cred.IAMEndpoint == "" {
		cred.IAMEndpoint = DefaultIAMEndpoint
	}
	if err := cred.validate(); err != nil {
		return nil, err
	}
	if kekID == "" {
		return nil, errors.New("cloudru: KEK id is required")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: opts.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          opts.Concurrency + 2,
		MaxIdleConnsPerHost:   opts.Concurrency + 2,
		ForceAttemptHTTP2:     true,
	}
	hc := &http.Client{
		Transport: transport,
		Timeout:   opts.Timeout,
		// A redirect could carry the bearer token or the secret elsewhere; the API never
		// redirects, so any redirect is answered as an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{
		kekID:       kekID,
		version:     opts.KeyVersionID,
		kmsURL:      strings.TrimRight(cred.KMSEndpoint, "/"),
		concurrency: opts.Concurrency,
		http:        hc,
		tokens: &tokenSource{
			http:   hc,
			url:    strings.TrimRight(cred.IAMEndpoint, "/") + "/api/v1/auth/token",
			keyID:  cred.KeyID,
			secret: cred.Secret,
			now:    time.Now,
		},
	}, nil
}

// String never prints the secret or a token.
func (c *Client) String() string { return "cloudru.Client{kek=" + c.kekID + " kms=" + c.kmsURL + "}" }

// Provider implements kms.KMS.
func (c *Client) Provider() string { return Provider }

// KEKID implements kms.KMS.
func (c *Client) KEKID() string { return c.kekID }

// Close implements kms.KMS: it drops idle connections. Calls in progress finish on their own.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// versionID reads a key version id given as a JSON string or number.
type versionID string

func (v *versionID) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = versionID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("key version id is neither a string nor a number")
	}
	*v = versionID(n.String())
	return nil
}

// Describe implements kms.KMS: GET /v1/keys/{keyId} (exists, readable, not disabled), then
// GET /v1/keys/{keyId}/versions for the latest version (the highest id).
func (c *Client) Describe(ctx context.Context) (kms.KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return kms.KeyInfo{}, fmt.Errorf("cloudru: describe %s: %w: %w", c.kekID, kms.ErrUnavailable, err)
	}
	keyPath := "/v1/keys/" + url.PathEscape(c.kekID)
	var key struct {
		State  string `json:"state"`
		Status string `json:"status"`
	}
	if err := c.call(ctx, "describe", http.MethodGet, keyPath, nil, &key); err != nil {
		return kms.KeyInfo{}, err
	}
	for _, s := range []string{key.State, key.Status} {
		if s := strings.ToUpper(s); strings.Contains(s, "DISABLED") || strings.Contains(s, "INACTIVE") {
			return kms.KeyInfo{}, fmt.Errorf("cloudru: describe %s: key is %s: %w", c.kekID, s, kms.ErrAccessDenied)
		}
	}
	var list struct {
		Versions []struct {
			ID versionID `json:"id"`
		} `json:"versions"`
	}
	if err := c.call(ctx, "describe", http.MethodGet, keyPath+"/versions?page.limit=1000&page.offset=0", nil, &list); err != nil {
		return kms.KeyInfo{}, err
	}
	latest, latestN := "", int64(-1)
	for _, v := range list.Versions {
		n, err := strconv.ParseInt(string(v.ID), 10, 64)
		switch {
		case err == nil && n > latestN:
			latest, latestN = string(v.ID), n
		case err != nil && latestN < 0 && v.ID != "":
			latest = string(v.ID) // not numeric: keep the last one listed
		}
	}
	if latest == "" {
		return kms.KeyInfo{}, fmt.Errorf("cloudru: describe %s: key has no versions: %w", c.kekID, kms.ErrKeyNotFound)
	}
	return kms.KeyInfo{Provider: Provider, KEKID: c.kekID, LatestVersion: latest}, nil
}

// Wrap implements kms.KMS: one POST /v1/encrypt per DEK, Options.Concurrency at a time.
func (c *Client) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	out := make([]kms.WrapResult, len(reqs))
	todo := make([]int, 0, len(reqs))
	for i, r := range reqs {
		switch {
		case len(r.DEK) == 0 || len(r.DEK) > MaxPlaintext:
			out[i].Err = fmt.Errorf("cloudru: encrypt %s: DEK is %d bytes, want 1..%d (no call made)", c.kekID, len(r.DEK), MaxPlaintext)
		case len(r.Context) > MaxAAD:
			out[i].Err = fmt.Errorf("cloudru: encrypt %s: context is %d bytes, limit %d (no call made)", c.kekID, len(r.Context), MaxAAD)
		default:
			todo = append(todo, i)
		}
	}
	if err := c.begin(ctx, "encrypt", len(todo)); err != nil {
		return nil, err
	}
	kms.ForEach(todo, c.concurrency, func(i int) { out[i] = c.wrapOne(ctx, reqs[i]) })
	return out, nil
}

// Unwrap implements kms.KMS: one POST /v1/decrypt per wrapped DEK, Options.Concurrency at a time.
func (c *Client) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	out := make([]kms.UnwrapResult, len(reqs))
	todo := make([]int, 0, len(reqs))
	for i, r := range reqs {
		switch {
		case len(r.WrappedDEK) == 0 || len(r.WrappedDEK) > maxWrapped:
			out[i].Err = fmt.Errorf("cloudru: decrypt %s: wrapped DEK is %d bytes (no call made): %w", c.kekID, len(r.WrappedDEK), kms.ErrInvalidCiphertext)
		case len(r.Context) > MaxAAD:
			out[i].Err = fmt.Errorf("cloudru: decrypt %s: context is %d bytes, limit %d (no call made): %w", c.kekID, len(r.Context), MaxAAD, kms.ErrInvalidCiphertext)
		default:
			todo = append(todo, i)
		}
	}
	if err := c.begin(ctx, "decrypt", len(todo)); err != nil {
		return nil, err
	}
	kms.ForEach(todo, c.concurrency, func(i int) { out[i].DEK, out[i].Err = c.unwrapOne(ctx, reqs[i]) })
	return out, nil
}

// begin fails the whole call before anything is sent: a done context, or no token to be had.
// With nothing to send it does nothing.
func (c *Client) begin(ctx context.Context, op string, n int) error {
	if n == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cloudru: %s %s: %w: %w", op, c.kekID, kms.ErrUnavailable, err)
	}
	if _, err := c.tokens.get(ctx, ""); err != nil {
		return fmt.Errorf("cloudru: %s %s: %w", op, c.kekID, err)
	}
	return nil
}

func (c *Client) wrapOne(ctx context.Context, r kms.WrapRequest) kms.WrapResult {
	// The body is built by hand so that the only copy of the base64 DEK is a byte slice that is
	// zeroed afterwards (a string from json.Marshal could not be).
	body := make([]byte, 0, 96+len(c.kekID)+len(c.version)+base64.StdEncoding.EncodedLen(len(r.DEK))+base64.StdEncoding.EncodedLen(len(r.Context)))
	body = append(body, `{"keyId":`...)
	body = appendJSONString(body, c.kekID)
	if c.version != "" {
		body = append(body, `,"keyVersionId":`...)
		body = appendJSONString(body, c.version)
	}
	body = append(body, `,"plaintext":"`...)
	body = base64.StdEncoding.AppendEncode(body, r.DEK)
	body = append(body, '"')
	if len(r.Context) > 0 {
		body = append(body, `,"aad":"`...)
		body = base64.StdEncoding.AppendEncode(body, r.Context)
		body = append(body, '"')
	}
	body = append(body, '}')
	defer clear(body)

	var resp struct {
		KeyVersionID versionID `json:"keyVersionId"`
		Ciphertext   string    `json:"ciphertext"`
	}
	if err := c.call(ctx, "encrypt", http.MethodPost, "/v1/encrypt", body, &resp); err != nil {
		return kms.WrapResult{Err: err}
	}
	version := string(resp.KeyVersionID)
	if version == "" {
		version = c.version
	}
	switch {
	case resp.Ciphertext == "":
		return kms.WrapResult{Err: fmt.Errorf("cloudru: encrypt %s: answer without ciphertext: %w", c.kekID, kms.ErrUnavailable)}
	case version == "":
		return kms.WrapResult{Err: fmt.Errorf("cloudru: encrypt %s: answer without keyVersionId and no version pinned in Options.KeyVersionID", c.kekID)}
	}
	return kms.WrapResult{WrappedDEK: []byte(resp.Ciphertext), KEKVersion: version}
}

func (c *Client) unwrapOne(ctx context.Context, r kms.UnwrapRequest) ([]byte, error) {
	body := make([]byte, 0, 64+len(c.kekID)+len(r.WrappedDEK)+base64.StdEncoding.EncodedLen(len(r.Context)))
	body = append(body, `{"keyId":`...)
	body = appendJSONString(body, c.kekID)
	body = append(body, `,"ciphertext":`...)
	body = appendJSONString(body, string(r.WrappedDEK))
	if len(r.Context) > 0 {
		body = append(body, `,"aad":"`...)
		body = base64.StdEncoding.AppendEncode(body, r.Context)
		body = append(body, '"')
	}
	body = append(body, '}')

	var resp struct {
		Plaintext []byte `json:"plaintext"` // base64 in JSON
	}
	if err := c.call(ctx, "decrypt", http.MethodPost, "/v1/decrypt", body, &resp); err != nil {
		kms.Zero(resp.Plaintext)
		return nil, err
	}
	if len(resp.Plaintext) == 0 {
		return nil, fmt.Errorf("cloudru: decrypt %s: answer without plaintext: %w", c.kekID, kms.ErrUnavailable)
	}
	return resp.Plaintext, nil
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// call sends one KMS request with the cached token, refreshing it once on 401, and decodes a
// 200 answer into out. The response body is zeroed after decoding (it may hold a DEK).
func (c *Client) call(ctx context.Context, op, method, path string, body []byte, out any) error {
	tok, err := c.tokens.get(ctx, "")
	if err != nil {
		return fmt.Errorf("cloudru: %s %s: %w", op, c.kekID, err)
	}
	status, raw, err := c.do(ctx, method, path, body, tok)
	if err == nil && status == http.StatusUnauthorized {
		clear(raw)
		if tok, err = c.tokens.get(ctx, tok); err != nil {
			return fmt.Errorf("cloudru: %s %s: after 401: %w", op, c.kekID, err)
		}
		status, raw, err = c.do(ctx, method, path, body, tok)
	}
	defer clear(raw)
	if err != nil {
		return fmt.Errorf("cloudru: %s %s: %w: %w", op, c.kekID, kms.ErrUnavailable, err)
	}
	if status != http.StatusOK {
		return c.statusErr(op, status, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("cloudru: %s %s: answer is not the expected JSON: %w", op, c.kekID, kms.ErrUnavailable)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, token string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.kmsURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		clear(raw)
		return 0, nil, fmt.Errorf("reading response: %w", err)
	}
	return resp.StatusCode, raw, nil
}

// gRPC status codes that Cloud.ru's gateway may put in an error body.
const (
	grpcPermissionDenied   = 7
	grpcFailedPrecondition = 9
	grpcUnauthenticated    = 16
)

// statusErr maps a non-200 KMS answer onto the sentinels (see the package comment).
func (c *Client) statusErr(op string, status int, raw []byte) error {
	code, msg := parseErrorBody(raw)
	detail := describeBody(raw)
	prefix := fmt.Sprintf("cloudru: %s %s: HTTP %d%s", op, c.kekID, status, detail)
	disabled := code == grpcFailedPrecondition || strings.Contains(strings.ToLower(msg), "disabled")
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("%s: %w", prefix, kms.ErrAccessDenied)
	case status == http.StatusNotFound:
		return fmt.Errorf("%s: %w", prefix, kms.ErrKeyNotFound)
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("%s: %w", prefix, kms.ErrUnavailable)
	case status >= 400 && status < 500 && (disabled || code == grpcPermissionDenied || code == grpcUnauthenticated):
		return fmt.Errorf("%s: %w", prefix, kms.ErrAccessDenied)
	case status == http.StatusBadRequest && op == "decrypt":
		return fmt.Errorf("%s: %w", prefix, kms.ErrInvalidCiphertext)
	}
	// Other answers (400 on encrypt, 409, 3xx, …) are not worth retrying and fit no sentinel.
	return errors.New(prefix)
}

// parseErrorBody reads a gRPC-gateway error {"code": n, "message": "…"}; zero values if it is not one.
func parseErrorBody(raw []byte) (int, string) {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return 0, ""
	}
	return e.Code, e.Message
}

// describeBody renders the service's error for an error string: the gRPC code and message,
// printable characters only, at most 200 of them. Request data is never part of it.
func describeBody(raw []byte) string {
	code, msg := parseErrorBody(raw)
	if code == 0 && msg == "" {
		return ""
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, msg)
	if r := []rune(msg); len(r) > 200 {
		msg = string(r[:200]) + "…"
	}
	return fmt.Sprintf(" (code %d: %s)", code, msg)
}
