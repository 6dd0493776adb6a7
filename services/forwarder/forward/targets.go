package forward

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
)

// TargetsFile is the layout of the targets file: per tenant, where its audit events go.
//
//	{"tenants": {
//	   "acme": {"webhook": {"url": "https://siem.acme.example/byok",
//	                        "secret_env": "ACME_WEBHOOK_SECRET",
//	                        "headers": {"Authorization": "Bearer ..."}}}}}
//
// "secret" (inline) or "secret_env" (the name of an environment variable holding it) is the HMAC
// key for X-Byok-Signature; exactly one is required. "headers" are added to every request (for a
// receiver's own authentication); their values are treated as secrets and never logged. Tenants
// not in the file have no target: their events are skipped.
type TargetsFile struct {
	Tenants map[string]TargetConfig `json:"tenants"`
}

// TargetConfig is one tenant's forwarding settings.
type TargetConfig struct {
	Webhook *WebhookConfig `json:"webhook"`
	// Syslog is recognised only to refuse it clearly: this version forwards to webhooks only.
	Syslog json.RawMessage `json:"syslog,omitempty"`
}

// WebhookConfig is a tenant's HTTP receiver.
type WebhookConfig struct {
	URL       string            `json:"url"`
	Secret    string            `json:"secret,omitempty"`
	SecretEnv string            `json:"secret_env,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
}

// MinSecretLen is the shortest accepted HMAC secret, in bytes.
const MinSecretLen = 16

// Target is a tenant's resolved webhook: the secret is loaded, the URL parsed. Its String
// method, and every log line, show only Redacted.
type Target struct {
	TenantID string
	url      *url.URL
	secret   []byte
	headers  http.Header
}

// Redacted is the receiver's scheme, host and path: no user info, no query (either may carry a
// token).
func (t *Target) Redacted() string {
	return t.url.Scheme + "://" + t.url.Host + t.url.EscapedPath()
}

// String never prints the secret, the headers or the query.
func (t *Target) String() string {
	return fmt.Sprintf("{tenant=%s webhook=%s secret=<redacted> headers=%d}", t.TenantID, t.Redacted(), len(t.headers))
}

// reservedHeaders are set by the forwarder; a target may not override them.
var reservedHeaders = map[string]bool{"Content-Type": true, "Content-Length": true, "Host": true}

// ParseTargets parses and checks a targets file, resolving secret_env through getenv. Errors
// name the tenant and field but never quote a value (it may be a secret).
func ParseTargets(b []byte, getenv func(string) string) (map[string]*Target, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields() // a misspelt "secret_env" must not silently mean "unsigned"
	var f TargetsFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("targets file is not valid: %s", jsonErrWithoutInput(err))
	}
	ids := make([]string, 0, len(f.Tenants))
	for id := range f.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make(map[string]*Target, len(ids))
	for _, id := range ids {
		t, err := resolve(id, f.Tenants[id], getenv)
		if err != nil {
			return nil, err
		}
		out[id] = t
	}
	return out, nil
}

// LoadTargets reads and parses the targets file at path, resolving secret_env from the process
// environment.
func LoadTargets(path string) (map[string]*Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("targets file %s: cannot read: %w", path, errors.Unwrap(err))
	}
	return ParseTargets(b, os.Getenv)
}

func resolve(id string, c TargetConfig, getenv func(string) string) (*Target, error) {
	if strings.TrimSpace(id) == "" {
		return nil, errors.New("targets file: empty tenant id")
	}
	if len(c.Syslog) > 0 {
		return nil, fmt.Errorf("tenant %s: syslog: not supported by this forwarder version (webhook only)", id)
	}
	w := c.Webhook
	if w == nil {
		return nil, fmt.Errorf("tenant %s: webhook: required", id)
	}
	u, err := url.Parse(w.URL)
	switch {
	case w.URL == "":
		return nil, fmt.Errorf("tenant %s: webhook.url: required", id)
	case err != nil:
		return nil, fmt.Errorf("tenant %s: webhook.url: not a URL", id) // the parse error quotes the URL
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("tenant %s: webhook.url: scheme must be http or https", id)
	case u.Host == "":
		return nil, fmt.Errorf("tenant %s: webhook.url: host required", id)
	}
	var secret string
	switch {
	case w.Secret != "" && w.SecretEnv != "":
		return nil, fmt.Errorf("tenant %s: webhook: give secret or secret_env, not both", id)
	case w.Secret != "":
		secret = w.Secret
	case w.SecretEnv != "":
		secret = getenv(w.SecretEnv)
		if secret == "" {
			return nil, fmt.Errorf("tenant %s: webhook.secret_env: environment variable %s is empty", id, w.SecretEnv)
		}
	default:
		return nil, fmt.Errorf("tenant %s: webhook: secret or secret_env is required (events are always signed)", id)
	}
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("tenant %s: webhook secret: must be at least %d bytes", id, MinSecretLen)
	}
	h := http.Header{}
	for k, v := range w.Headers {
		ck := http.CanonicalHeaderKey(k)
		if !validHeaderName(k) {
			return nil, fmt.Errorf("tenant %s: webhook.headers: %q is not a valid header name", id, k)
		}
		if reservedHeaders[ck] || strings.HasPrefix(ck, "X-Byok-") {
			return nil, fmt.Errorf("tenant %s: webhook.headers: %s is set by the forwarder", id, ck)
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("tenant %s: webhook.headers: value of %s contains a line break", id, ck)
		}
		h.Set(ck, v)
	}
	return &Target{TenantID: id, url: u, secret: []byte(secret), headers: h}, nil
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r > 0x7e || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}

// jsonErrWithoutInput keeps position information but not the offending text, which could be a
// secret.
func jsonErrWithoutInput(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s has the wrong type", te.Field)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return err.Error()[len("json: "):] // the field name, not a value
	}
	return "cannot decode"
}
