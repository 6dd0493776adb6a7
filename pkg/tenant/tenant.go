// Package tenant holds each tenant's byok configuration — whether byok is on, which provider and
// KEK, and the credential — and hands the encrypt path a KMS client per tenant.
//
// Configuration comes from two layers: a JSON tenants file (re-read when it changes) and the
// tenant settings the customer saves through the settings service (followed from the settings
// topic, applied with SetTenant). A tenant's saved settings win over its entry in the file.
// Either way a change takes effect at run time, without a restart.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/registry"
)

// Config is one tenant's settings.
type Config struct {
	// Enabled turns byok on: every new message of the tenant is encrypted.
	Enabled  bool   `json:"enabled"`
	Provider string `json:"provider,omitempty"` // vault | yandex | cloudru | local
	KEKID    string `json:"kek_id,omitempty"`
	// Credential is the provider's credential JSON, inline. Prefer CredentialEnv or
	// CredentialFile so that secrets stay out of the config file.
	Credential     json.RawMessage `json:"credential,omitempty"`
	CredentialEnv  string          `json:"credential_env,omitempty"`
	CredentialFile string          `json:"credential_file,omitempty"`
	// Revision is the saved settings' revision (settings layer only; not in tenants files). Any
	// new revision counts as a change, even with the same key and credential: re-saving the
	// settings is how a customer makes every worker drop its cached DEKs (after a KEK rotation).
	Revision uint64 `json:"-"`
}

// File is the layout of a tenants file: {"tenants": {"<tenant id>": Config, ...}}.
type File struct {
	Tenants map[string]Config `json:"tenants"`
}

// String never prints the credential.
func (c Config) String() string {
	return fmt.Sprintf("{enabled=%t provider=%s kek_id=%s credential=<redacted>}", c.Enabled, c.Provider, c.KEKID)
}

func (c Config) credential() ([]byte, error) {
	switch {
	case len(c.Credential) > 0:
		return c.Credential, nil
	case c.CredentialEnv != "":
		v := os.Getenv(c.CredentialEnv)
		if v == "" {
			return nil, fmt.Errorf("credential env %s is empty", c.CredentialEnv)
		}
		return []byte(v), nil
	case c.CredentialFile != "":
		b, err := os.ReadFile(c.CredentialFile)
		if err != nil {
			return nil, fmt.Errorf("credential file %s: cannot read", c.CredentialFile)
		}
		return b, nil
	}
	return nil, errors.New("no credential, credential_env or credential_file")
}

// ParseFile parses and checks a tenants file.
func ParseFile(b []byte) (File, error) {
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return File{}, fmt.Errorf("tenant: tenants file is not valid JSON: %v", jsonErrWithoutInput(err))
	}
	for id, c := range f.Tenants {
		if id == "" {
			return File{}, errors.New("tenant: empty tenant id")
		}
		if c.Enabled && (c.Provider == "" || c.KEKID == "") {
			return File{}, fmt.Errorf("tenant %s: enabled tenants need provider and kek_id", id)
		}
	}
	return f, nil
}

// jsonErrWithoutInput keeps position information but not the offending text, which could be
// part of a credential.
func jsonErrWithoutInput(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s has the wrong type", te.Field)
	}
	return "cannot decode"
}

// entry is a tenant's config with its opened client.
type entry struct {
	cfg    Config
	client kms.KMS
	err    error
}

// Directory answers "is byok on for this tenant, and with which KMS?". Safe for concurrent use.
type Directory struct {
	mu      sync.RWMutex
	entries map[string]*entry
	// applyMu serializes changes; file and settings are the two configuration layers.
	applyMu  sync.Mutex
	file     map[string]Config
	settings map[string]Config
	// onChange is called with the ids of tenants whose configuration changed (for cache drops).
	onChange func(tenantIDs []string)
	log      zerolog.Logger
	// open builds a tenant's KMS client; registry.Open unless SetKMSOptions changed it.
	open func(provider, kekID string, credential []byte) (kms.KMS, error)
}

// NewDirectory returns an empty directory.
func NewDirectory(log zerolog.Logger) *Directory {
	return &Directory{entries: map[string]*entry{}, file: map[string]Config{}, settings: map[string]Config{},
		log: log, open: registry.Open}
}

// SetKMSOptions sets operator options for the KMS clients opened from now on (call before Apply).
func (d *Directory) SetKMSOptions(opts registry.Options) {
	d.open = func(provider, kekID string, credential []byte) (kms.KMS, error) {
		return registry.OpenWith(opts, provider, kekID, credential)
	}
}

// OnChange registers fn to be called after tenants' configurations change.
func (d *Directory) OnChange(fn func(tenantIDs []string)) { d.onChange = fn }

// Apply replaces the file layer of the configuration with f, opening KMS clients for enabled
// tenants. A tenant whose client cannot be opened stays in the directory with that error, so its
// messages fail closed instead of passing through unencrypted.
func (d *Directory) Apply(f File) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.file = maps.Clone(f.Tenants)
	d.rebuild()
}

// SetTenant sets a tenant's saved settings (the settings layer), which win over the tenants file.
func (d *Directory) SetTenant(id string, c Config) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.settings[id] = c
	d.rebuild()
}

// RemoveTenant forgets a tenant's saved settings; its tenants file entry, if any, applies again.
func (d *Directory) RemoveTenant(id string) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	delete(d.settings, id)
	d.rebuild()
}

// rebuild makes the entries match both layers, reusing the clients of unchanged tenants.
// Call with applyMu held.
func (d *Directory) rebuild() {
	merged := maps.Clone(d.file)
	if merged == nil {
		merged = map[string]Config{}
	}
	maps.Copy(merged, d.settings)
	next := make(map[string]*entry, len(merged))
	var changed []string
	d.mu.RLock()
	for id, c := range merged {
		if old, ok := d.entries[id]; ok && sameConfig(old.cfg, c) {
			next[id] = old
			continue
		}
		e := &entry{cfg: c}
		if c.Enabled {
			cred, err := c.credential()
			if err == nil {
				e.client, err = d.open(c.Provider, c.KEKID, cred)
			}
			if err != nil {
				e.err = fmt.Errorf("tenant %s: %w", id, err)
				d.log.Error().Str("tenant_id", id).Err(e.err).Msg("tenant KMS configuration is unusable; its messages are held")
			}
		}
		next[id] = e
		changed = append(changed, id)
	}
	for id := range d.entries {
		if _, ok := merged[id]; !ok {
			changed = append(changed, id)
		}
	}
	d.mu.RUnlock()
	d.mu.Lock()
	old := d.entries
	d.entries = next
	d.mu.Unlock()
	for _, id := range changed {
		if e, ok := old[id]; ok && e.client != nil && next[id] != e {
			_ = e.client.Close()
		}
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		d.log.Info().Strs("tenants", changed).Msg("tenant configuration changed")
		if d.onChange != nil {
			d.onChange(changed)
		}
	}
}

func sameConfig(a, b Config) bool {
	return a.Enabled == b.Enabled && a.Provider == b.Provider && a.KEKID == b.KEKID && a.Revision == b.Revision &&
		string(a.Credential) == string(b.Credential) && a.CredentialEnv == b.CredentialEnv &&
		a.CredentialFile == b.CredentialFile
}

// Enabled reports whether byok is on for tenantID. Unknown tenants are not enabled.
func (d *Directory) Enabled(tenantID string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.entries[tenantID]
	return ok && e.cfg.Enabled
}

// KMSFor implements dek.Resolver.
func (d *Directory) KMSFor(tenantID string) (kms.KMS, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.entries[tenantID]
	if !ok || !e.cfg.Enabled {
		return nil, fmt.Errorf("tenant %s: %w", tenantID, dek.ErrNoKMS)
	}
	if e.err != nil {
		// A broken configuration is a KMS we cannot reach: hold, never pass through.
		return nil, fmt.Errorf("%v: %w", e.err, kms.ErrUnavailable)
	}
	return e.client, nil
}

// Tenants returns the configured tenant ids, sorted.
func (d *Directory) Tenants() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ids := make([]string, 0, len(d.entries))
	for id := range d.entries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// LoadFile reads and applies a tenants file once.
func (d *Directory) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("tenant: read %s: %w", path, err)
	}
	f, err := ParseFile(b)
	if err != nil {
		return err
	}
	d.Apply(f)
	return nil
}

// WatchFile re-reads path every interval while its modification time or size changes, until ctx
// ends. A file that fails to parse is logged and ignored: the last good configuration stays.
func (d *Directory) WatchFile(ctx context.Context, path string, interval time.Duration) {
	var lastMod time.Time
	var lastSize int64 = -1
	if fi, err := os.Stat(path); err == nil {
		lastMod, lastSize = fi.ModTime(), fi.Size()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fi, err := os.Stat(path)
			if err != nil || (fi.ModTime().Equal(lastMod) && fi.Size() == lastSize) {
				continue
			}
			lastMod, lastSize = fi.ModTime(), fi.Size()
			if err := d.LoadFile(path); err != nil {
				d.log.Error().Err(err).Str("path", path).Msg("tenants file not applied; keeping the previous configuration")
			}
		}
	}
}

// Close closes every KMS client.
func (d *Directory) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.entries {
		if e.client != nil {
			_ = e.client.Close()
		}
	}
	d.entries = map[string]*entry{}
	return nil
}
