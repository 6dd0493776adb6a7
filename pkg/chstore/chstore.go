// Package chstore is byok's audit store in ClickHouse: it connects over the native protocol,
// applies the schema migrations (audit_events and its per-minute rollup), inserts AuditEvents in
// batches, enforces retention, and answers the few queries tests and tools need.
//
// The migrations' source of truth is schemas/clickhouse/*.sql; migrations/ here holds byte-for-byte
// copies so they can be embedded (schemas/ is outside this module), and a test fails when the two
// differ. What does not live here: reading the audit topic (services/auditor) and producing events
// (pkg/audit).
//
// The client is clickhouse-go/v2 v2.25.0 on purpose: it is the last version whose batch insert
// sends `INSERT … VALUES`, which ClickHouse 18.16 (Debian bookworm's server) accepts; later
// versions send `FORMAT Native` and fail there. Newer server features (TTL) are used only when
// `SELECT version()` says the server has them.
package chstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Table names, as created by the migrations.
const (
	TableEvents    = "audit_events"
	TablePerMinute = "audit_events_per_minute"
	ViewPerMinute  = "audit_per_minute"
	TableMigration = "schema_migrations"
)

// Store is a connection pool to one ClickHouse database holding the audit tables. It is safe for
// concurrent use.
type Store struct {
	conn     driver.Conn
	database string
	version  Version
}

// Option configures Open.
type Option func(*options)

type options struct {
	username, password string
	dialTimeout        time.Duration
	readTimeout        time.Duration
}

// WithAuth sets the ClickHouse user and password (default: user "default", no password).
func WithAuth(username, password string) Option {
	return func(o *options) { o.username, o.password = username, password }
}

// WithDialTimeout bounds connecting (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithReadTimeout bounds waiting for a server response (default 60s).
func WithReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Open connects to the server at addr (host:port, native protocol), creates database if it does
// not exist, and returns a Store using it. It does not create tables: call Migrate.
func Open(ctx context.Context, addr, database string, opts ...Option) (*Store, error) {
	if !identifier.MatchString(database) {
		return nil, fmt.Errorf("clickhouse: database name %q is not a plain identifier", database)
	}
	o := options{username: "default", dialTimeout: 5 * time.Second, readTimeout: 60 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	open := func(db string) (driver.Conn, error) {
		conn, err := clickhouse.Open(&clickhouse.Options{
			Addr:         []string{addr},
			Auth:         clickhouse.Auth{Database: db, Username: o.username, Password: o.password},
			DialTimeout:  o.dialTimeout,
			ReadTimeout:  o.readTimeout,
			Compression:  &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
			MaxOpenConns: 4,
			MaxIdleConns: 2,
		})
		if err != nil {
			return nil, fmt.Errorf("clickhouse: open %s: %w", addr, err)
		}
		if err := conn.Ping(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("clickhouse: connect %s: %w", addr, err)
		}
		return conn, nil
	}
	// The native handshake fails for a missing database, so create it from "default" first.
	boot, err := open("default")
	if err != nil {
		return nil, err
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+database)
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("clickhouse: create database %s: %w", database, err)
	}
	conn, err := open(database)
	if err != nil {
		return nil, err
	}
	s := &Store{conn: conn, database: database}
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: server version: %w", err)
	}
	if s.version, err = ParseVersion(v); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.conn.Close() }

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.conn.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse: ping: %w", err)
	}
	return nil
}

// Database is the database the store uses.
func (s *Store) Database() string { return s.database }

// ServerVersion is the server's version as seen at Open.
func (s *Store) ServerVersion() Version { return s.version }

// Conn is the underlying connection pool, for queries this package does not wrap.
func (s *Store) Conn() driver.Conn { return s.conn }

// Version is a ClickHouse server version, e.g. 18.16.1 or 24.8.4.13.
type Version struct{ Major, Minor, Patch int }

// ParseVersion parses the output of `SELECT version()`.
func ParseVersion(v string) (Version, error) {
	parts := strings.Split(strings.TrimSpace(v), ".")
	var out Version
	dst := []*int{&out.Major, &out.Minor, &out.Patch}
	for i := 0; i < len(dst) && i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return Version{}, fmt.Errorf("clickhouse: unrecognised server version %q", v)
		}
		*dst[i] = n
	}
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("clickhouse: unrecognised server version %q", v)
	}
	return out, nil
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// SupportsTTL reports whether the server has table TTL (ClickHouse 19.6 and later).
func (v Version) SupportsTTL() bool { return v.AtLeast(19, 6) }

// IsUnavailable reports whether err means the server could not be reached or the connection broke
// (as opposed to the server rejecting a query): worth retrying with backoff.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var ex *clickhouse.Exception
	return !errors.As(err, &ex)
}
