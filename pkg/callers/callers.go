// Package callers authenticates services and admins by bearer token: a JSON file maps each name
// to the SHA-256 of its token and the tenants it may act on. Only hashes are stored, so the file
// grants nothing to whoever reads it; tokens are compared in constant time.
package callers

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// File is the layout of a callers file:
//
//	{"callers": {"<name>": {"token_sha256": "<hex>", "tenants": ["acme", ...]}}}
//
// Only the SHA-256 of each bearer token is stored: the file grants nothing to whoever reads it.
type File struct {
	Callers map[string]Config `json:"callers"`
}

// Config is one caller.
type Config struct {
	TokenSHA256 string   `json:"token_sha256"`
	Tenants     []string `json:"tenants"`
}

// Caller is an authenticated caller.
type Caller struct {
	Name    string
	tenants map[string]bool
}

// New returns a caller allowed tenants (for tests and for callers built in code).
func New(name string, tenants ...string) *Caller {
	c := &Caller{Name: name, tenants: map[string]bool{}}
	for _, t := range tenants {
		c.tenants[t] = true
	}
	return c
}

// Allowed reports whether the caller may act on tenant.
func (c *Caller) Allowed(tenant string) bool { return c.tenants[tenant] }

type callerEntry struct {
	hash   [sha256.Size]byte
	caller *Caller
}

// Set authenticates bearer tokens. Safe for concurrent use (read-only after creation).
type Set struct {
	entries []callerEntry
}

// Parse parses and checks a callers file. Errors name the caller, never a hash.
func Parse(b []byte) (*Set, error) {
	var f File
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, errors.New("callers file is not valid JSON of the form {\"callers\": {\"<name>\": {\"token_sha256\": ..., \"tenants\": [...]}}}")
	}
	if len(f.Callers) == 0 {
		return nil, errors.New("callers file lists no callers")
	}
	cs := &Set{}
	seen := map[[sha256.Size]byte]string{}
	names := make([]string, 0, len(f.Callers))
	for name := range f.Callers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cc := f.Callers[name]
		if name == "" {
			return nil, errors.New("callers file: empty caller name")
		}
		raw, err := hex.DecodeString(cc.TokenSHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("caller %s: token_sha256 is not 64 hex digits", name)
		}
		var h [sha256.Size]byte
		copy(h[:], raw)
		if other, dup := seen[h]; dup {
			return nil, fmt.Errorf("callers %s and %s have the same token", other, name)
		}
		seen[h] = name
		if len(cc.Tenants) == 0 {
			return nil, fmt.Errorf("caller %s: tenants is empty", name)
		}
		if slices.Contains(cc.Tenants, "") {
			return nil, fmt.Errorf("caller %s: empty tenant id", name)
		}
		c := New(name, cc.Tenants...)
		cs.entries = append(cs.entries, callerEntry{hash: h, caller: c})
	}
	return cs, nil
}

// Load reads and parses a callers file.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("callers file %s: cannot read", path)
	}
	return Parse(b)
}

// Authenticate returns the caller whose token hash matches token. Every entry is compared, in
// constant time, so timing tells nothing about which hash (or how much of it) matched.
func (cs *Set) Authenticate(token string) (*Caller, bool) {
	if token == "" {
		return nil, false
	}
	h := sha256.Sum256([]byte(token))
	var found *Caller
	for _, e := range cs.entries {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found = e.caller
		}
	}
	return found, found != nil
}

// TokenSHA256 is the hex SHA-256 of a token, as the callers file stores it.
func TokenSHA256(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
