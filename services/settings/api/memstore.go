package api

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// MemStore is a Store in memory, for tests and local experiments: nothing reaches another
// process. Records are copied in and out, so callers cannot change what it holds.
type MemStore struct {
	mu          sync.Mutex
	settings    map[string]*byokv1.TenantSettings
	revocations map[string]map[string]*byokv1.Revocation // tenant → id → record
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{settings: map[string]*byokv1.TenantSettings{}, revocations: map[string]map[string]*byokv1.Revocation{}}
}

// Settings implements Store.
func (m *MemStore) Settings(tenantID string) (*byokv1.TenantSettings, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ts, ok := m.settings[tenantID]
	if !ok {
		return nil, false
	}
	return proto.Clone(ts).(*byokv1.TenantSettings), true
}

// Tenants returns the tenants with settings, sorted.
func (m *MemStore) Tenants() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.settings))
	for id := range m.settings {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Revocations implements Store: oldest first (revocation ids are UUIDv7, so by id).
func (m *MemStore) Revocations(tenantID string) []*byokv1.Revocation {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*byokv1.Revocation, 0, len(m.revocations[tenantID]))
	for _, r := range m.revocations[tenantID] {
		out = append(out, proto.Clone(r).(*byokv1.Revocation))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RevocationId < out[j].RevocationId })
	return out
}

// PutSettings implements Store.
func (m *MemStore) PutSettings(_ context.Context, ts *byokv1.TenantSettings) error {
	if ts.GetTenantId() == "" {
		return fmt.Errorf("memstore: settings without tenant_id")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings[ts.TenantId] = proto.Clone(ts).(*byokv1.TenantSettings)
	return nil
}

// Revoke implements Store.
func (m *MemStore) Revoke(_ context.Context, r *byokv1.Revocation) error {
	if r.GetTenantId() == "" || r.GetRevocationId() == "" {
		return fmt.Errorf("memstore: revocation without tenant_id or revocation_id")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.revocations[r.TenantId] == nil {
		m.revocations[r.TenantId] = map[string]*byokv1.Revocation{}
	}
	m.revocations[r.TenantId][r.RevocationId] = proto.Clone(r).(*byokv1.Revocation)
	return nil
}

// Unrevoke implements Store. Withdrawing an unknown revocation is not an error (a tombstone).
func (m *MemStore) Unrevoke(_ context.Context, tenantID, revocationID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.revocations[tenantID], revocationID)
	return nil
}
