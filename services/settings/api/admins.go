package api

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/byok-io/byok/pkg/callers"
)

// Admin is an authenticated tenant administrator: the customer's security team, or ops.
type Admin struct {
	*callers.Caller
	// Tenants are the tenants the admin may act on, sorted.
	Tenants []string
}

// Admins authenticates admins by bearer token. The admins file has the callers file layout of
// pkg/callers — {"callers": {"<name>": {"token_sha256": "<hex>", "tenants": [...]}}} — so only
// token hashes are stored and tokens are compared in constant time. Safe for concurrent use
// (read-only after creation).
type Admins struct {
	set     *callers.Set
	tenants map[string][]string // admin name → tenants, sorted
}

// ParseAdmins parses and checks an admins file. Errors name the admin, never a hash or token.
func ParseAdmins(b []byte) (*Admins, error) {
	set, err := callers.Parse(b)
	if err != nil {
		return nil, err
	}
	// callers.Parse checked the layout; the tenant lists are read again because a Caller only
	// answers Allowed(tenant), while the page and `byokctl tenant list` need the list itself.
	var f callers.File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("admins file: %w", err)
	}
	a := &Admins{set: set, tenants: make(map[string][]string, len(f.Callers))}
	for name, c := range f.Callers {
		ts := slices.Clone(c.Tenants)
		slices.Sort(ts)
		a.tenants[name] = slices.Compact(ts)
	}
	return a, nil
}

// LoadAdmins reads and parses an admins file.
func LoadAdmins(path string) (*Admins, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admins file %s: cannot read", path)
	}
	return ParseAdmins(b)
}

// name is the admin's name, "" when not authenticated.
func (a Admin) name() string {
	if a.Caller == nil {
		return ""
	}
	return a.Name
}

// Authenticate returns the admin whose token is token.
func (a *Admins) Authenticate(token string) (Admin, bool) {
	c, ok := a.set.Authenticate(token)
	if !ok {
		return Admin{}, false
	}
	return Admin{Caller: c, Tenants: a.tenants[c.Name]}, true
}
