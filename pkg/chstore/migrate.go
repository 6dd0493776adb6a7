package chstore

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationFiles are copies of schemas/clickhouse/*.sql (TestMigrationsMatchSchemas keeps them so).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version    uint32
	Name       string // file name, e.g. "0001_audit_events.sql"
	Checksum   string // hex SHA-256 of the file
	Statements []string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: migrations: %w", err)
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("clickhouse: migration %s: name must be NNNN_description.sql", name)
		}
		if prev, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("clickhouse: migrations %s and %s share version %d", prev, name, v)
		}
		seen[uint32(v)] = name
		body, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, fmt.Errorf("clickhouse: migration %s: %w", name, err)
		}
		sum := sha256.Sum256(body)
		out = append(out, Migration{Version: uint32(v), Name: name, Checksum: hex.EncodeToString(sum[:]), Statements: SplitStatements(string(body))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// SplitStatements splits a migration file into statements: whole-line `--` comments are dropped
// and a statement ends with a line ending in `;`. (The native protocol takes one statement per
// query.)
func SplitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			if s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// AppliedMigration is a row of schema_migrations.
type AppliedMigration struct {
	Version   uint32
	Name      string
	Checksum  string
	AppliedAt time.Time
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree()
ORDER BY version`

// Migrate applies the migrations not yet recorded in schema_migrations, in order, recording each
// after all its statements succeeded, and returns the ones it applied. Running it again applies
// nothing. It fails if a recorded migration's file changed since it was applied (migrations are
// append-only: fix forward with a new file).
//
// Every statement is idempotent (IF NOT EXISTS), and schema_migrations is a ReplacingMergeTree on
// version read with FINAL, so two processes migrating at once, or a migration interrupted half
// way and run again, end in the same schema with each version recorded once.
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	if err := s.conn.Exec(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("clickhouse: create schema_migrations: %w", err)
	}
	applied, err := s.AppliedMigrations(ctx)
	if err != nil {
		return nil, err
	}
	done := map[uint32]AppliedMigration{}
	for _, a := range applied {
		done[a.Version] = a
	}
	var ran []Migration
	for _, m := range migs {
		if a, ok := done[m.Version]; ok {
			if a.Checksum != m.Checksum {
				return ran, fmt.Errorf("clickhouse: migration %s was changed after it was applied (recorded checksum %.12s, file %.12s); add a new migration instead", m.Name, a.Checksum, m.Checksum)
			}
			continue
		}
		for i, stmt := range m.Statements {
			if err := s.conn.Exec(ctx, stmt); err != nil {
				return ran, fmt.Errorf("clickhouse: migration %s statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := s.recordMigration(ctx, m); err != nil {
			return ran, err
		}
		ran = append(ran, m)
	}
	return ran, nil
}

func (s *Store) recordMigration(ctx context.Context, m Migration) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, checksum, applied_at)")
	if err != nil {
		return fmt.Errorf("clickhouse: record migration %s: %w", m.Name, err)
	}
	if err := b.Append(m.Version, m.Name, m.Checksum, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return fmt.Errorf("clickhouse: record migration %s: %w", m.Name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: record migration %s: %w", m.Name, err)
	}
	return nil
}

// AppliedMigrations returns the recorded migrations in version order, one row per version.
func (s *Store) AppliedMigrations(ctx context.Context) ([]AppliedMigration, error) {
	rows, err := s.conn.Query(ctx, "SELECT version, name, checksum, applied_at FROM schema_migrations FINAL ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: read schema_migrations: %w", err)
	}
	defer rows.Close()
	var out []AppliedMigration
	for rows.Next() {
		var a AppliedMigration
		if err := rows.Scan(&a.Version, &a.Name, &a.Checksum, &a.AppliedAt); err != nil {
			return nil, fmt.Errorf("clickhouse: read schema_migrations: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
