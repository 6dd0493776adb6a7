package api

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

// CallersFile is the layout of the callers file:
//
//	{"callers": {"<name>": {"token_sha256": "<hex>", "tenants": ["acme", ...]}}}
//
// Only the SHA-256 of each bearer token is stored: the file grants nothing to whoever reads it.
type CallersFile struct {
	Callers map[string]CallerConfig `json:"callers"`
}

// CallerConfig is one calling service.
type CallerConfig struct {
	TokenSHA256 string   `json:"token_sha256"`
	Tenants     []string `json:"tenants"`
}

// Caller is an authenticated calling service.
type Caller struct {
	Name    string
	tenants map[string]bool
}

// MayRead reports whether the caller may read tenant's messages.
func (c *Caller) MayRead(tenant string) bool { return c.tenants[tenant] }

type callerEntry struct {
	hash   [sha256.Size]byte
	caller *Caller
}

// Callers authenticates bearer tokens. Safe for concurrent use (read-only after creation).
type Callers struct {
	entries []callerEntry
}

// ParseCallers parses and checks a callers file. Errors name the caller, never a hash.
func ParseCallers(b []byte) (*Callers, error) {
	var f CallersFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, errors.New("callers file is not valid JSON of the form {\"callers\": {\"<name>\": {\"token_sha256\": ..., \"tenants\": [...]}}}")
	}
	if len(f.Callers) == 0 {
		return nil, errors.New("callers file lists no callers")
	}
	cs := &Callers{}
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
		c := &Caller{Name: name, tenants: map[string]bool{}}
		for _, t := range cc.Tenants {
			if t == "" {
				return nil, fmt.Errorf("caller %s: empty tenant id", name)
			}
			c.tenants[t] = true
		}
		cs.entries = append(cs.entries, callerEntry{hash: h, caller: c})
	}
	return cs, nil
}

// LoadCallers reads and parses a callers file.
func LoadCallers(path string) (*Callers, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("callers file %s: cannot read", path)
	}
	return ParseCallers(b)
}

// Authenticate returns the caller whose token hash matches token. Every entry is compared, in
// constant time, so timing tells nothing about which hash (or how much of it) matched.
func (cs *Callers) Authenticate(token string) (*Caller, bool) {
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
