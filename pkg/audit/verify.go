package audit

import (
	"bytes"
	"fmt"
	"sort"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// ChainReport is the verdict on one chain (tenant × emitting process).
type ChainReport struct {
	TenantID string
	WorkerID string
	ChainID  string
	Events   int    // distinct events in the chain
	Problem  string // "" when the chain is intact
}

// Verify checks every chain in events (in any order; duplicates by event id are ignored): seq
// counts from 0 without gaps, each prev_hash is the previous event's hash, and each hash matches
// the event's content. It reports, per chain, the first broken or missing link.
func Verify(events []*byokv1.AuditEvent) []ChainReport {
	type key struct{ tenant, chain string }
	chains := map[key][]*byokv1.AuditEvent{}
	seen := map[string]bool{}
	for _, ev := range events {
		if seen[ev.EventId] {
			continue
		}
		seen[ev.EventId] = true
		k := key{ev.TenantId, ev.ChainId}
		chains[k] = append(chains[k], ev)
	}
	var out []ChainReport
	for k, evs := range chains {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
		r := ChainReport{TenantID: k.tenant, WorkerID: evs[0].WorkerId, ChainID: k.chain, Events: len(evs)}
		var prev []byte
		for i, ev := range evs {
			switch {
			case ev.Seq != uint64(i):
				if ev.Seq < uint64(i) {
					r.Problem = fmt.Sprintf("two different events claim seq %d (event %s)", ev.Seq, ev.EventId)
				} else {
					r.Problem = fmt.Sprintf("missing event(s) seq %d..%d before event %s", i, ev.Seq-1, ev.EventId)
				}
			case !bytes.Equal(ev.PrevHash, prev):
				r.Problem = fmt.Sprintf("seq %d (event %s): prev_hash does not match the hash of seq %d", ev.Seq, ev.EventId, ev.Seq-1)
			case !bytes.Equal(Hash(ev), ev.Hash):
				r.Problem = fmt.Sprintf("seq %d (event %s): content does not match its hash (altered)", ev.Seq, ev.EventId)
			}
			if r.Problem != "" {
				break
			}
			prev = ev.Hash
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TenantID != out[j].TenantID {
			return out[i].TenantID < out[j].TenantID
		}
		if out[i].WorkerID != out[j].WorkerID {
			return out[i].WorkerID < out[j].WorkerID
		}
		return out[i].ChainID < out[j].ChainID
	})
	return out
}
