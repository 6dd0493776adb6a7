package chstore

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
)

// RetentionReport says what ApplyRetention did.
type RetentionReport struct {
	TTL     bool     // a table TTL was set (servers with TTL only)
	Dropped []string // "table/YYYYMM" partitions dropped
}

// ApplyRetention deletes audit data older than keep (keep <= 0 keeps everything).
//
// Both audit tables are partitioned by UTC month, so every month that ended before now-keep is
// dropped whole (ALTER TABLE … DROP PARTITION): cheap, immediate, and available on every server
// version. Data is therefore kept at least keep and at most keep plus one month. On servers with
// table TTL (19.6+) it also sets TTL time + keep (in whole days, rounded up), which deletes
// expired rows of the current months during merges without waiting for this to run again.
//
// Run it regularly (the auditor runs it at start and then daily); it is idempotent.
func (s *Store) ApplyRetention(ctx context.Context, keep time.Duration, now time.Time) (RetentionReport, error) {
	var rep RetentionReport
	if keep <= 0 {
		return rep, nil
	}
	if s.version.SupportsTTL() {
		days := int(math.Ceil(keep.Hours() / 24))
		for table, col := range map[string]string{TableEvents: "time", TablePerMinute: "minute"} {
			q := fmt.Sprintf("ALTER TABLE %s MODIFY TTL %s + INTERVAL %d DAY", table, col, days)
			if err := s.conn.Exec(ctx, q); err != nil {
				return rep, fmt.Errorf("clickhouse: retention: set TTL on %s: %w", table, err)
			}
		}
		rep.TTL = true
	}
	cutoff := now.UTC().Add(-keep)
	for _, table := range []string{TableEvents, TablePerMinute} {
		parts, err := s.partitions(ctx, table)
		if err != nil {
			return rep, err
		}
		for _, p := range parts {
			ym, err := strconv.Atoi(p)
			if err != nil || ym < 197001 {
				continue // not a toYYYYMM partition: leave it alone
			}
			monthEnd := time.Date(ym/100, time.Month(ym%100)+1, 1, 0, 0, 0, 0, time.UTC)
			if monthEnd.After(cutoff) {
				continue
			}
			if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP PARTITION %d", table, ym)); err != nil {
				return rep, fmt.Errorf("clickhouse: retention: drop %s partition %d: %w", table, ym, err)
			}
			rep.Dropped = append(rep.Dropped, fmt.Sprintf("%s/%d", table, ym))
		}
	}
	return rep, nil
}

// partitions lists the active partitions of table, oldest first.
func (s *Store) partitions(ctx context.Context, table string) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active", s.database, table)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: list partitions of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("clickhouse: list partitions of %s: %w", table, err)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, rows.Err()
}
