// Command byokctl is the tool of the customer's security team and of ops:
//
//	byokctl audit verify    [-brokers …] [-audit-topic byok.audit]
//	byokctl tenant validate -tenant acme -provider vault|yandex|cloudru|local -kek-id KEY
//	                        -credential-file cred.json [-brokers …] [-audit-topic byok.audit]
//
// `audit verify` reads every event on the audit topic, checks each hash chain (tenant × emitting
// worker), prints one line per chain and exits 1 if any link is broken or missing.
//
// `tenant validate` proves a tenant's KMS settings with a real round trip (describe the key, wrap
// and unwrap a test DEK) — what saving the settings does — and says what to fix if it fails. Its
// KMS calls are audited like any other byok component's.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"syscall"
	"time"

	"github.com/byok-io/byok/pkg/audit"
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
  byokctl tenant validate -tenant ID -provider NAME -kek-id KEY -credential-file FILE [-brokers ...] [-audit-topic name]`

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
	case "audit verify":
		if err := fs.Parse(args[2:]); err != nil {
			return 2
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return auditVerify(ctx, *brokers, *topic, out, errOut)
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
