package chstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// ErrInvalidEvent marks an event that cannot be stored (no event id, no tenant, or a time outside
// what a ClickHouse DateTime holds). Insert rejects a batch containing one; callers check events
// with CheckEvent first.
var ErrInvalidEvent = errors.New("clickhouse: invalid audit event")

// CheckEvent reports why ev cannot be stored, or nil.
func CheckEvent(ev *byokv1.AuditEvent) error {
	switch {
	case ev == nil:
		return fmt.Errorf("%w: nil", ErrInvalidEvent)
	case ev.EventId == "":
		return fmt.Errorf("%w: no event_id", ErrInvalidEvent)
	case ev.TenantId == "":
		return fmt.Errorf("%w: event %s has no tenant_id", ErrInvalidEvent, ev.EventId)
	case ev.Time == nil || ev.Time.CheckValid() != nil:
		return fmt.Errorf("%w: event %s has no valid time", ErrInvalidEvent, ev.EventId)
	case ev.Time.Seconds < 0 || ev.Time.Seconds > math.MaxUint32:
		return fmt.Errorf("%w: event %s time %v is outside DateTime's range", ErrInvalidEvent, ev.EventId, ev.Time.AsTime())
	}
	return nil
}

const insertEvents = "INSERT INTO audit_events (event_id, time, time_nanos, tenant_id, provider, kek_id, kek_version, operation, scope_chat_ids, scope_days, dek_count, actor_service, actor_user, purpose, result, error_code, failed_items, latency_ms, worker_id, chain_id, request_id, seq, prev_hash, hash, schema_version)"

// Insert writes events in one batch. It returns only after the server accepted the whole batch;
// on error any part of it may or may not be stored, and inserting the same events again is
// harmless: rows of one event_id collapse (see schemas/clickhouse/README.md), so retry it as is.
func (s *Store) Insert(ctx context.Context, events []*byokv1.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	n := len(events)
	var (
		eventID, tenant, provider, kek, kekVersion, op = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		actorService, actorUser, purpose, result, code = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		worker, chain, request, prevHash, hash         = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                                          = make([]time.Time, n)
		nanos, deks, failed, latency, schema           = make([]uint32, n), make([]uint32, n), make([]uint32, n), make([]uint32, n), make([]uint32, n)
		seq                                            = make([]uint64, n)
		chats, days                                    = make([][]string, n), make([][]string, n)
	)
	for i, ev := range events {
		if err := CheckEvent(ev); err != nil {
			return fmt.Errorf("clickhouse: insert: event %d of %d: %w", i, n, err)
		}
		eventID[i], tenant[i], provider[i], kek[i], kekVersion[i], op[i] = ev.EventId, ev.TenantId, ev.Provider, ev.KekId, ev.KekVersion, ev.Operation
		actorService[i], actorUser[i], purpose[i], result[i], code[i] = ev.ActorService, ev.ActorUser, ev.Purpose, ev.Result, ev.ErrorCode
		worker[i], chain[i], request[i], prevHash[i], hash[i] = ev.WorkerId, ev.ChainId, ev.RequestId, string(ev.PrevHash), string(ev.Hash)
		times[i], nanos[i] = time.Unix(ev.Time.Seconds, 0).UTC(), uint32(ev.Time.Nanos)
		deks[i], failed[i], latency[i], schema[i], seq[i] = ev.DekCount, ev.FailedItems, ev.LatencyMs, ev.SchemaVersion, ev.Seq
		c, d := make([]string, len(ev.Scopes)), make([]string, len(ev.Scopes))
		for j, sc := range ev.Scopes {
			c[j], d[j] = sc.ChatId, sc.Day
		}
		chats[i], days[i] = c, d
	}
	b, err := s.conn.PrepareBatch(ctx, insertEvents)
	if err != nil {
		return fmt.Errorf("clickhouse: insert %d events: %w", n, err)
	}
	cols := []any{eventID, times, nanos, tenant, provider, kek, kekVersion, op, chats, days, deks,
		actorService, actorUser, purpose, result, code, failed, latency, worker, chain, request, seq, prevHash, hash, schema}
	for i, col := range cols {
		if err := b.Column(i).Append(col); err != nil {
			_ = b.Abort()
			return fmt.Errorf("clickhouse: insert %d events: column %d: %w", n, i, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: insert %d events: %w", n, err)
	}
	return nil
}
