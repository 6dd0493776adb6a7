// Package anomaly runs the anomaly queries byok ships for the audit store: unwrap spikes, denied
// and failed bursts, new actors or purposes, access outside a tenant's usual hours, attempts on
// revoked scopes, and unusual batch sizes — each compared against the tenant's own baseline.
//
// The queries' source of truth is schemas/clickhouse/queries/NN_name.sql, plain SQL analysts run
// with clickhouse-client; queries/ here holds byte-for-byte copies so they can be embedded
// (schemas/ is outside this module), and a test fails when the two differ. After editing:
// cp schemas/clickhouse/queries/*.sql pkg/anomaly/queries/.
//
// SQL conventions (the files run on ClickHouse 18.16, which has no server-side {p:Type}
// parameters):
//   - One SELECT per file, no trailing semicolon, after a header of whole-line `--` comments that
//     says what the query finds, its parameters and how to read its result, with a copy-paste
//     `sed … | clickhouse-client` line holding literal values.
//   - Parameters are named placeholders `@name` (names are prefix-free, so sed can replace them).
//     This package strips the header and binds them client-side with clickhouse-go's named
//     binding (strings quoted and escaped, times as toDateTime(…, 'UTC')). Every query takes
//     @tenant (empty = all), @now (end of the window, exclusive — never now(), so results are
//     reproducible) and @window_s; the baseline is the @baseline_s seconds just before the window.
//   - Reads are deduplicated: audit_events FINAL, or the per-minute rollup with its filter inside.
//   - The first two result columns are tenant_id (String) and at (DateTime); the rest are the
//     query's own, shown in Finding.Fields.
package anomaly

import (
	"context"
	"embed"
	"fmt"
	"path"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed queries/*.sql
var queryFiles embed.FS

// Querier runs a query; a chstore.Store's Conn() (a clickhouse-go driver.Conn) is one.
type Querier interface {
	Query(ctx context.Context, query string, args ...any) (driver.Rows, error)
}

// Query is one shipped anomaly query.
type Query struct {
	Name   string // e.g. "unwrap_spikes" (the file name without NN_ and .sql)
	File   string // e.g. "01_unwrap_spikes.sql"
	Title  string // the header's first line, e.g. "minutes in which a tenant unwrapped …"
	Header string // the comment block, without the leading "-- "
	SQL    string // the statement, placeholders unbound
}

// Queries returns the embedded queries in file order.
func Queries() ([]Query, error) {
	entries, err := queryFiles.ReadDir("queries")
	if err != nil {
		return nil, fmt.Errorf("anomaly: queries: %w", err)
	}
	var out []Query
	for _, e := range entries {
		file := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(file, ".sql"), "_")
		if !ok || len(num) != 2 || rest == "" {
			return nil, fmt.Errorf("anomaly: query file %s: name must be NN_name.sql", file)
		}
		body, err := queryFiles.ReadFile(path.Join("queries", file))
		if err != nil {
			return nil, fmt.Errorf("anomaly: query %s: %w", file, err)
		}
		q := Query{Name: rest, File: file}
		var header, sql []string
		for _, line := range strings.Split(string(body), "\n") {
			t := strings.TrimSpace(line)
			if strings.HasPrefix(t, "--") {
				if len(sql) == 0 {
					header = append(header, strings.TrimPrefix(strings.TrimPrefix(t, "--"), " "))
				}
				continue
			}
			if t != "" {
				sql = append(sql, line)
			}
		}
		if len(header) == 0 || len(sql) == 0 {
			return nil, fmt.Errorf("anomaly: query %s needs a -- header and a statement", file)
		}
		q.Header = strings.Join(header, "\n")
		if _, title, ok := strings.Cut(header[0], ":"); ok {
			q.Title = strings.TrimSpace(title)
		}
		q.SQL = strings.TrimSuffix(strings.TrimSpace(strings.Join(sql, "\n")), ";")
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

// Params are the inputs of every query; Defaults gives sensible values.
type Params struct {
	TenantID string        // "" = every tenant
	Now      time.Time     // end of the window (exclusive)
	Window   time.Duration // the period looked at: [Now-Window, Now)
	Baseline time.Duration // the tenant's usual: [Now-Window-Baseline, Now-Window)

	SpikeK       float64 // unwrap_spikes: stddevs above the baseline mean
	SpikeMinDEKs int     // unwrap_spikes: ignore minutes with fewer DEKs unwrapped

	FailMinCount int     // failure_bursts: failed calls in a minute, at least
	FailMinRatio float64 // failure_bursts: failed share of the minute's calls, at least
	FailK        float64 // failure_bursts: stddevs above the baseline mean

	NewByUser bool // new_actors: an actor is (service, user) rather than the service alone

	HourMaxShare   float64 // off_hours: hour of day "unusual" below this share of baseline calls
	HourMinUnwraps int     // off_hours: unwrap calls in the hour, at least

	RevokedMinAttempts int // revoked_scope_attempts: attempts per actor, at least

	BatchP99Factor    float64 // unusual_batches: multiple of the baseline p99 dek_count
	BatchMedianFactor float64 // unusual_batches: multiple of the baseline median dek_count
	BatchMinBaseline  int     // unusual_batches: baseline calls needed per tenant and operation
}

// Defaults returns the parameters byokctl uses: a 1 h window against the 7 days before it.
func Defaults(now time.Time) Params {
	return Params{
		Now: now, Window: time.Hour, Baseline: 7 * 24 * time.Hour,
		SpikeK: 4, SpikeMinDEKs: 50,
		FailMinCount: 10, FailMinRatio: 0.5, FailK: 4,
		NewByUser:    true,
		HourMaxShare: 0.01, HourMinUnwraps: 5,
		RevokedMinAttempts: 1,
		BatchP99Factor:     2, BatchMedianFactor: 10, BatchMinBaseline: 100,
	}
}

func (p Params) check() error {
	switch {
	case p.Now.IsZero():
		return fmt.Errorf("anomaly: Params.Now is not set")
	case p.Window < time.Second || p.Window%time.Second != 0:
		return fmt.Errorf("anomaly: window %v must be whole seconds, at least 1s", p.Window)
	case p.Baseline < time.Minute || p.Baseline%time.Minute != 0:
		return fmt.Errorf("anomaly: baseline %v must be whole minutes, at least 1m", p.Baseline)
	}
	return nil
}

func (p Params) named() []any {
	b := 0
	if p.NewByUser {
		b = 1
	}
	return []any{
		clickhouse.Named("tenant", p.TenantID),
		clickhouse.Named("now", p.Now.UTC().Truncate(time.Second)),
		clickhouse.Named("window_s", uint64(p.Window/time.Second)),
		clickhouse.Named("baseline_s", uint64(p.Baseline/time.Second)),
		clickhouse.Named("spike_k", p.SpikeK),
		clickhouse.Named("spike_min_deks", p.SpikeMinDEKs),
		clickhouse.Named("fail_min_count", p.FailMinCount),
		clickhouse.Named("fail_min_ratio", p.FailMinRatio),
		clickhouse.Named("fail_k", p.FailK),
		clickhouse.Named("new_by_user", b),
		clickhouse.Named("hour_max_share", p.HourMaxShare),
		clickhouse.Named("hour_min_unwraps", p.HourMinUnwraps),
		clickhouse.Named("revoked_min_attempts", p.RevokedMinAttempts),
		clickhouse.Named("batch_p99_factor", p.BatchP99Factor),
		clickhouse.Named("batch_median_factor", p.BatchMedianFactor),
		clickhouse.Named("batch_min_baseline", p.BatchMinBaseline),
	}
}

// Field is one result column of a finding, formatted.
type Field struct{ Name, Value string }

// Finding is one result row of an anomaly query.
type Finding struct {
	Query    string    // the query's name, e.g. "unwrap_spikes"
	TenantID string    // column tenant_id
	At       time.Time // column at: the minute, hour or first call the row is about (UTC)
	Detail   string    // the other columns as "name=value", space separated
	Fields   []Field   // the other columns, in result order
}

// Field returns the formatted value of column name, or "".
func (f Finding) Field(name string) string {
	for _, c := range f.Fields {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// Run runs the query called name ("unwrap_spikes" or its file name "01_unwrap_spikes.sql").
func Run(ctx context.Context, db Querier, name string, p Params) ([]Finding, error) {
	qs, err := Queries()
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Name == name || q.File == name || strings.TrimSuffix(q.File, ".sql") == name {
			return run(ctx, db, q, p)
		}
	}
	return nil, fmt.Errorf("anomaly: no query named %q", name)
}

// RunAll runs every query and returns their findings by query name (an empty slice when clean).
// It stops at the first query that fails.
func RunAll(ctx context.Context, db Querier, p Params) (map[string][]Finding, error) {
	qs, err := Queries()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]Finding, len(qs))
	for _, q := range qs {
		f, err := run(ctx, db, q, p)
		if err != nil {
			return out, err
		}
		out[q.Name] = f
	}
	return out, nil
}

func run(ctx context.Context, db Querier, q Query, p Params) ([]Finding, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, q.SQL, p.named()...)
	if err != nil {
		return nil, fmt.Errorf("anomaly: %s: %w", q.Name, err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	if len(types) < 2 || types[0].Name() != "tenant_id" || types[1].Name() != "at" {
		return nil, fmt.Errorf("anomaly: %s: result must start with columns tenant_id, at", q.Name)
	}
	out := []Finding{}
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("anomaly: %s: %w", q.Name, err)
		}
		f := Finding{Query: q.Name}
		f.TenantID, _ = reflect.ValueOf(dest[0]).Elem().Interface().(string)
		if at, ok := reflect.ValueOf(dest[1]).Elem().Interface().(time.Time); ok {
			f.At = at.UTC()
		}
		var detail []string
		for i := 2; i < len(types); i++ {
			v := formatValue(reflect.ValueOf(dest[i]).Elem().Interface())
			f.Fields = append(f.Fields, Field{Name: types[i].Name(), Value: v})
			detail = append(detail, types[i].Name()+"="+v)
		}
		f.Detail = strings.Join(detail, " ")
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("anomaly: %s: %w", q.Name, err)
	}
	return out, nil
}

func formatValue(v any) string {
	switch v := v.(type) {
	case time.Time:
		return v.UTC().Format("2006-01-02 15:04:05")
	case []string:
		return strings.Join(v, ",")
	case float64:
		return fmt.Sprintf("%g", v)
	case float32:
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprint(v)
}
