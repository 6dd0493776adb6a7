package chstore

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// Counts describes audit_events for one tenant (or all).
type Counts struct {
	Rows     uint64 // stored rows, replays not yet collapsed by a merge included
	Final    uint64 // rows as read with FINAL: one per event_id
	Distinct uint64 // distinct event ids
}

func tenantFilter(tenantID string) (string, []any) {
	if tenantID == "" {
		return "", nil
	}
	return " WHERE tenant_id = ?", []any{tenantID}
}

// Count returns the row counts of tenantID's events ("" for every tenant).
func (s *Store) Count(ctx context.Context, tenantID string) (Counts, error) {
	where, args := tenantFilter(tenantID)
	var c Counts
	if err := s.conn.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM audit_events"+where, args...).Scan(&c.Rows, &c.Distinct); err != nil {
		return c, fmt.Errorf("clickhouse: count events: %w", err)
	}
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM audit_events FINAL"+where, args...).Scan(&c.Final); err != nil {
		return c, fmt.Errorf("clickhouse: count events FINAL: %w", err)
	}
	return c, nil
}

// DuplicateEventIDs returns the event ids that occur more than once in FINAL results: empty when
// deduplication holds.
func (s *Store) DuplicateEventIDs(ctx context.Context) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT event_id FROM audit_events FINAL GROUP BY event_id HAVING count() > 1 ORDER BY event_id LIMIT 1000")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: duplicate event ids: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("clickhouse: duplicate event ids: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Events reads tenantID's events ("" for all) back as AuditEvents, one per event_id (FINAL), in
// time order — complete enough for audit.Verify to re-check their hash chains.
func (s *Store) Events(ctx context.Context, tenantID string) ([]*byokv1.AuditEvent, error) {
	where, args := tenantFilter(tenantID)
	rows, err := s.conn.Query(ctx, `SELECT event_id, time, time_nanos, tenant_id, provider, kek_id, kek_version, operation,
		scope_chat_ids, scope_days, dek_count, actor_service, actor_user, purpose, result, error_code, failed_items,
		latency_ms, worker_id, chain_id, request_id, seq, prev_hash, hash, schema_version
		FROM audit_events FINAL`+where+` ORDER BY tenant_id, time, time_nanos, event_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: read events: %w", err)
	}
	defer rows.Close()
	var out []*byokv1.AuditEvent
	for rows.Next() {
		var (
			ev          byokv1.AuditEvent
			t           time.Time
			nanos       uint32
			chats, days []string
			prev, hash  string
		)
		if err := rows.Scan(&ev.EventId, &t, &nanos, &ev.TenantId, &ev.Provider, &ev.KekId, &ev.KekVersion, &ev.Operation,
			&chats, &days, &ev.DekCount, &ev.ActorService, &ev.ActorUser, &ev.Purpose, &ev.Result, &ev.ErrorCode, &ev.FailedItems,
			&ev.LatencyMs, &ev.WorkerId, &ev.ChainId, &ev.RequestId, &ev.Seq, &prev, &hash, &ev.SchemaVersion); err != nil {
			return nil, fmt.Errorf("clickhouse: read events: %w", err)
		}
		ev.Time = &timestamppb.Timestamp{Seconds: t.Unix(), Nanos: int32(nanos)}
		for i := range chats {
			sc := &byokv1.AuditScope{ChatId: chats[i]}
			if i < len(days) {
				sc.Day = days[i]
			}
			ev.Scopes = append(ev.Scopes, sc)
		}
		if prev != "" {
			ev.PrevHash = []byte(prev)
		}
		if hash != "" {
			ev.Hash = []byte(hash)
		}
		out = append(out, &ev)
	}
	return out, rows.Err()
}

// MinuteStats is one row of the per-minute rollup (the audit_per_minute view).
type MinuteStats struct {
	TenantID     string
	Minute       time.Time
	Operation    string
	Result       string
	Purpose      string
	ActorService string
	Events       uint64 // distinct events: replays are not counted twice
	DEKs         uint64 // sum of dek_count over those events
	FailedItems  uint64
	LatencyMsMax uint32
}

// PerMinute returns the rollup rows of tenantID ("" for all) in [from, to), ordered by minute.
// It reads audit_events_per_minute with the filter inside the aggregation (the audit_per_minute
// view computes the same numbers, but older servers filter it only after merging every row).
func (s *Store) PerMinute(ctx context.Context, tenantID string, from, to time.Time) ([]MinuteStats, error) {
	where := "minute >= ? AND minute < ?"
	args := []any{from.UTC().Truncate(time.Second), to.UTC().Truncate(time.Second)}
	if tenantID != "" {
		where += " AND tenant_id = ?"
		args = append(args, tenantID)
	}
	q := `SELECT tenant_id, minute, operation, result, purpose, actor_service,
		toUInt64(length(c)),
		arraySum(arrayMap(x -> toUInt64(tupleElement(x, 2)), c)),
		arraySum(arrayMap(x -> toUInt64(tupleElement(x, 3)), c)),
		arrayReduce('max', arrayMap(x -> tupleElement(x, 4), c))
		FROM (
			SELECT tenant_id, minute, operation, result, purpose, actor_service, groupUniqArrayMerge(calls) AS c
			FROM audit_events_per_minute WHERE ` + where + `
			GROUP BY tenant_id, minute, operation, result, purpose, actor_service
		)`
	rows, err := s.conn.Query(ctx, q+" ORDER BY tenant_id, minute, operation, result, purpose, actor_service", args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: per-minute rollup: %w", err)
	}
	defer rows.Close()
	var out []MinuteStats
	for rows.Next() {
		var m MinuteStats
		if err := rows.Scan(&m.TenantID, &m.Minute, &m.Operation, &m.Result, &m.Purpose, &m.ActorService,
			&m.Events, &m.DEKs, &m.FailedItems, &m.LatencyMsMax); err != nil {
			return nil, fmt.Errorf("clickhouse: per-minute rollup: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Optimize merges every part of the audit tables now (OPTIMIZE … FINAL), so stored rows equal
// FINAL rows. For tests and maintenance: it rewrites whole partitions.
func (s *Store) Optimize(ctx context.Context) error {
	for _, t := range []string{TableEvents, TablePerMinute} {
		if err := s.conn.Exec(ctx, "OPTIMIZE TABLE "+t+" FINAL"); err != nil {
			return fmt.Errorf("clickhouse: optimize %s: %w", t, err)
		}
	}
	return nil
}
