// Command byokctl is the tool of the customer's security team and of ops:
//
//	byokctl audit verify    [-brokers …] [-audit-topic byok.audit]
//	byokctl audit report    [-clickhouse addr] [-clickhouse-database byok] [-tenant T]
//	                        [-window 1h] [-baseline 168h] [-now RFC3339]
//	byokctl tenant validate -tenant acme -provider vault|yandex|cloudru|local -kek-id KEY
//	                        -credential-file cred.json [-brokers …] [-audit-topic byok.audit]
//	byokctl key rotate      -vault-addr URL -vault-token-file F -key KEY
//	byokctl key retire      -vault-addr URL -vault-token-file F -key KEY -min-decryption-version N [-trim]
//	byokctl rewrap          -tenant acme -provider P -kek-id KEY -credential-file cred.json
//	                        -from-topic T -to-topic T2 -method rewrap|unwrap-wrap [-brokers …] [-audit-topic byok.audit]
//	byokctl tenant list     [-settings-url URL] [-token-file F]
//	byokctl tenant enable   -tenant acme [-provider P -kek-id KEY -credential-file cred.json] [-dek-cache-ttl 30s]
//	byokctl tenant disable  -tenant acme
//	byokctl revoke          -tenant acme [-chat C] [-from YYYY-MM-DD] [-to YYYY-MM-DD] -reason TEXT [-all]
//	byokctl unrevoke        -tenant acme -id REVOCATION_ID
//	byokctl revocations     -tenant acme
//
// `audit verify` reads every event on the audit topic, checks each hash chain (tenant × emitting
// worker), prints one line per chain and exits 1 if any link is broken or missing.
//
// `audit report` runs the anomaly queries shipped in schemas/clickhouse/queries (pkg/anomaly)
// against the ClickHouse audit store — the window before -now (default: the current time) against
// each tenant's baseline just before it — and prints one table per query, "no findings" when
// clean. It exits 0 whatever it finds, 1 when a query cannot run.
//
// `tenant validate` proves a tenant's KMS settings with a real round trip (describe the key, wrap
// and unwrap a test DEK) — what saving the settings does — and says what to fix if it fails. Its
// KMS calls are audited like any other byok component's.
//
// `key rotate` adds a version to a tenant's Vault transit key and prints its versions; `key
// retire` raises its min_decryption_version (and with -trim deletes the older versions for good).
// `rewrap` copies a storage topic to a new one, moving one tenant's envelopes to the KEK's latest
// version through its audited KMS. The procedure is docs/rotation.md (rotate.go).
//
// `tenant list|enable|disable`, `revoke`, `unrevoke` and `revocations` ask the settings service
// (-settings-url, BYOK_SETTINGS_URL) with an admin token (BYOK_SETTINGS_TOKEN or -token-file), as
// its web page does: enabling validates with a real round trip through the tenant's KMS and is
// refused, with the reason, when that fails (settings.go).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/byok-io/byok/pkg/anomaly"
	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/tenant"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  byokctl audit verify    [-brokers host:port,...] [-audit-topic name]
  byokctl audit report    [-clickhouse host:port] [-clickhouse-database byok] [-tenant ID] [-window 1h] [-baseline 168h] [-now RFC3339]
  byokctl tenant validate -tenant ID -provider NAME -kek-id KEY -credential-file FILE [-brokers ...] [-audit-topic name]
  byokctl key rotate      -vault-addr URL -vault-token-file FILE -key KEY [-mount transit] [-namespace NS]
  byokctl key retire      -vault-addr URL -vault-token-file FILE -key KEY -min-decryption-version N [-trim]
  byokctl rewrap          -tenant ID -provider NAME -kek-id KEY -credential-file FILE -from-topic NAME -to-topic NAME -method rewrap|unwrap-wrap [-brokers ...] [-audit-topic name] [-batch 500]
  byokctl tenant list     [-settings-url URL] [-token-file FILE]
  byokctl tenant enable   -tenant ID [-provider NAME -kek-id KEY -credential-file FILE] [-dek-cache-ttl 30s] [-settings-url URL] [-token-file FILE]
  byokctl tenant disable  -tenant ID [-settings-url URL] [-token-file FILE]
  byokctl revoke          -tenant ID [-chat ID] [-from YYYY-MM-DD] [-to YYYY-MM-DD] -reason TEXT [-all] [-settings-url URL] [-token-file FILE]
  byokctl unrevoke        -tenant ID -id REVOCATION_ID [-settings-url URL] [-token-file FILE]
  byokctl revocations     -tenant ID [-settings-url URL] [-token-file FILE]`

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(errOut, usage)
		return 2
	}
	fs := flagenv.New("byokctl " + args[0] + " " + args[1])
	fs.SetOutput(errOut)
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers")
	topic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "audit topic")
	timeout := fs.Duration("timeout", "BYOK_CTL_TIMEOUT", 2*time.Minute, "give up after")
	switch args[0] + " " + args[1] {
	case "key rotate", "key retire": // rotate.go
		return keyCmd(ctx, args[1], args[2:], out, errOut)
	case "rewrap " + args[1]: // one word, `byokctl rewrap -tenant …` (rotate.go)
		return rewrapCmd(ctx, args[1:], out, errOut)
	case "tenant list", "tenant enable", "tenant disable": // settings.go
		return tenantSettingsCmd(ctx, args[1], args[2:], out, errOut)
	case "revoke " + args[1], "unrevoke " + args[1], "revocations " + args[1]: // one word (settings.go)
		return revocationCmd(ctx, args[0], args[1:], out, errOut)
	case "audit verify":
		if err := fs.Parse(args[2:]); err != nil {
			return 2
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return auditVerify(ctx, *brokers, *topic, out, errOut)
	case "audit report":
		chAddr := fs.String("clickhouse", "BYOK_CLICKHOUSE_ADDR", "127.0.0.1:19000", "ClickHouse native protocol address host:port")
		chDB := fs.String("clickhouse-database", "BYOK_CLICKHOUSE_DATABASE", "byok", "ClickHouse database holding audit_events")
		chUser := fs.String("clickhouse-user", "BYOK_CLICKHOUSE_USER", "default", "ClickHouse user")
		chPassword := fs.String("clickhouse-password", "BYOK_CLICKHOUSE_PASSWORD", "", "ClickHouse password (prefer the env var)")
		tenantID := fs.String("tenant", "BYOK_CTL_TENANT", "", "only this tenant (default: every tenant)")
		window := fs.Duration("window", "BYOK_CTL_WINDOW", time.Hour, "the period looked at, ending at -now")
		baseline := fs.Duration("baseline", "BYOK_CTL_BASELINE", 7*24*time.Hour, "the tenant's usual: this long, just before the window")
		nowFlag := fs.String("now", "BYOK_CTL_NOW", "", "end of the window, RFC 3339 (default: the current time)")
		if err := fs.Parse(args[2:]); err != nil {
			return 2
		}
		now := time.Now().UTC()
		if *nowFlag != "" {
			t, err := time.Parse(time.RFC3339, *nowFlag)
			if err != nil {
				fmt.Fprintf(errOut, "byokctl: -now %q: want RFC 3339, e.g. 2026-03-12T14:30:00Z\n", *nowFlag)
				return 2
			}
			now = t.UTC()
		}
		p := anomaly.Defaults(now)
		p.TenantID, p.Window, p.Baseline = *tenantID, *window, *baseline
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return auditReport(ctx, *chAddr, *chDB, chstore.WithAuth(*chUser, *chPassword), p, out, errOut)
	case "tenant validate":
		tenantID := fs.String("tenant", "BYOK_CTL_TENANT", "", "tenant id")
		provider := fs.String("provider", "BYOK_CTL_PROVIDER", "", "vault, yandex, cloudru or local")
		kekID := fs.String("kek-id", "BYOK_CTL_KEK_ID", "", "the tenant's key id in its KMS")
		credFile := fs.String("credential-file", "BYOK_CTL_CREDENTIAL_FILE", "", "file holding the provider's credential JSON")
		loopback := fs.Bool("kms-insecure-loopback", "BYOK_KMS_INSECURE_LOOPBACK", false, "dev/test only: plaintext gRPC to a loopback KMS endpoint")
		if err := fs.Parse(args[2:]); err != nil {
			return 2
		}
		if *tenantID == "" || *provider == "" || *kekID == "" || *credFile == "" {
			fmt.Fprintln(errOut, "byokctl: -tenant, -provider, -kek-id and -credential-file are required")
			return 2
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return tenantValidate(ctx, *brokers, *topic, *tenantID, *provider, *kekID, *credFile, registry.Options{InsecureLoopback: *loopback}, out, errOut)
	}
	fmt.Fprintln(errOut, usage)
	return 2
}

func auditVerify(ctx context.Context, brokers []string, topic string, out, errOut io.Writer) int {
	events, err := audit.ReadTopic(ctx, brokers, topic)
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	reports := audit.Verify(events)
	broken := 0
	for _, r := range reports {
		status := "ok"
		if r.Problem != "" {
			status, broken = "BROKEN: "+r.Problem, broken+1
		}
		fmt.Fprintf(out, "tenant %-20s worker %-24s chain %.8s %6d events  %s\n", r.TenantID, r.WorkerID, r.ChainID, r.Events, status)
	}
	fmt.Fprintf(out, "%d events, %d chains, %d broken\n", len(events), len(reports), broken)
	if broken > 0 {
		return 1
	}
	return 0
}

func auditReport(ctx context.Context, addr, database string, auth chstore.Option, p anomaly.Params, out, errOut io.Writer) int {
	qs, err := anomaly.Queries()
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	s, err := chstore.Open(ctx, addr, database, auth, chstore.WithDialTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	defer s.Close()
	results, err := anomaly.RunAll(ctx, s.Conn(), p)
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	const ts = "2006-01-02 15:04:05"
	who := "every tenant"
	if p.TenantID != "" {
		who = "tenant " + p.TenantID
	}
	fmt.Fprintf(out, "anomaly report for %s: window %s – %s UTC, baseline from %s UTC (%s)\n",
		who, p.Now.Add(-p.Window).Format(ts), p.Now.Format(ts), p.Now.Add(-p.Window-p.Baseline).Format(ts), p.Baseline)
	total := 0
	for _, q := range qs {
		fs := results[q.Name]
		total += len(fs)
		fmt.Fprintf(out, "\n== %s: %s\n", q.Name, q.Title)
		if len(fs) == 0 {
			fmt.Fprintln(out, "no findings")
			continue
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		head := []string{"TENANT", "AT"}
		for _, f := range fs[0].Fields {
			head = append(head, strings.ToUpper(f.Name))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, f := range fs {
			row := []string{f.TenantID, f.At.Format(ts)}
			for _, c := range f.Fields {
				row = append(row, c.Value)
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	fmt.Fprintf(out, "\n%d findings from %d queries\n", total, len(qs))
	return 0
}

func tenantValidate(ctx context.Context, brokers []string, topic, tenantID, provider, kekID, credFile string,
	opts registry.Options, out, errOut io.Writer) int {
	cred, err := os.ReadFile(credFile)
	if err != nil {
		fmt.Fprintf(errOut, "byokctl: cannot read -credential-file %s\n", credFile)
		return 2
	}
	k, err := registry.OpenWith(opts, provider, kekID, cred)
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	defer k.Close()
	sink := audit.NewKafkaSink(brokers, topic)
	defer sink.Close()
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	audited := audit.Wrap(k, tenantID, audit.NewLog(sink, "byokctl"), audit.Access{ActorService: "byokctl", ActorUser: who, Purpose: "validate"})
	if err := tenant.Validate(ctx, tenantID, audited); err != nil {
		fmt.Fprintln(out, "INVALID:", err)
		return 1
	}
	fmt.Fprintf(out, "ok: %s key %s wraps and unwraps for tenant %s\n", provider, kekID, tenantID)
	return 0
}
