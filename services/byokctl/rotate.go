package main

// The rotation commands: `key rotate` and `key retire` manage the tenant's Vault transit key with
// the customer security team's token; `rewrap` copies a storage topic, moving one tenant's
// envelopes to the KEK's latest version. docs/rotation.md is the procedure.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/kms/vault"
	"github.com/byok-io/byok/pkg/rotate"
)

// keyCmd runs `byokctl key rotate|retire`. Its Vault calls are the customer's own key
// management, recorded by Vault's audit devices; they touch no DEK, so byok's audit does not.
func keyCmd(ctx context.Context, sub string, args []string, out, errOut io.Writer) int {
	fs := flagenv.New("byokctl key " + sub)
	fs.SetOutput(errOut)
	addr := fs.String("vault-addr", "BYOK_CTL_VAULT_ADDR", "", "the customer's Vault, e.g. https://vault.customer.example:8200")
	tokenFile := fs.String("vault-token-file", "BYOK_CTL_VAULT_TOKEN_FILE", "", "file holding a Vault token allowed to manage the key (never given on the command line)")
	key := fs.String("key", "BYOK_CTL_KEY", "", "the transit key (the tenant's KEK id)")
	mount := fs.String("mount", "BYOK_CTL_VAULT_MOUNT", "transit", "transit mount path")
	namespace := fs.String("namespace", "BYOK_CTL_VAULT_NAMESPACE", "", "Vault Enterprise namespace, if any")
	timeout := fs.Duration("timeout", "BYOK_CTL_TIMEOUT", time.Minute, "give up after")
	minDecryption := fs.Int("min-decryption-version", "BYOK_CTL_MIN_DECRYPTION_VERSION", 0, "retire: the oldest version Vault may still unwrap with")
	trim := fs.Bool("trim", "BYOK_CTL_TRIM", false, "retire: also delete the older versions from Vault for good (irreversible)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" || *tokenFile == "" || *key == "" {
		fmt.Fprintln(errOut, "byokctl: -vault-addr, -vault-token-file and -key are required")
		return 2
	}
	if sub == "retire" && *minDecryption < 1 {
		fmt.Fprintln(errOut, "byokctl: key retire needs -min-decryption-version N (N ≥ 1)")
		return 2
	}
	raw, err := os.ReadFile(*tokenFile)
	if err != nil {
		fmt.Fprintf(errOut, "byokctl: cannot read -vault-token-file %s\n", *tokenFile)
		return 2
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		fmt.Fprintf(errOut, "byokctl: -vault-token-file %s is empty\n", *tokenFile)
		return 2
	}
	a, err := vault.NewAdmin(vault.Credential{Address: *addr, Token: token, Mount: *mount, Namespace: *namespace}, vault.Options{})
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	switch sub {
	case "rotate":
		v, err := a.RotateKey(ctx, *key)
		if err != nil {
			fmt.Fprintln(errOut, "byokctl:", err)
			return 1
		}
		fmt.Fprintf(out, "rotated vault key %s: %s\n", *key, v)
		fmt.Fprintf(out, "new DEKs wrap under version %d (each encryptor's next DEK, within its DEK max age); "+
			"existing envelopes keep older versions until rewrapped (byokctl rewrap), then retire them "+
			"(byokctl key retire -min-decryption-version %d)\n", v.Latest, v.Latest)
	case "retire":
		v, err := a.SetMinDecryptionVersion(ctx, *key, *minDecryption)
		if err == nil && *trim {
			v, err = a.TrimVersions(ctx, *key, *minDecryption)
		}
		if err != nil {
			fmt.Fprintln(errOut, "byokctl:", err)
			return 1
		}
		fmt.Fprintf(out, "retired versions below %d of vault key %s: %s\n", *minDecryption, *key, v)
		if *trim {
			fmt.Fprintf(out, "versions below %d are deleted from Vault: envelopes still wrapped under them are unrecoverable\n", v.MinAvailable)
		} else {
			fmt.Fprintf(out, "envelopes still wrapped under older versions no longer open; reversible "+
				"(lower -min-decryption-version) until trimmed (-trim)\n")
		}
	default:
		fmt.Fprintln(errOut, usage)
		return 2
	}
	return 0
}

// rewrapCmd runs `byokctl rewrap`: rotate.Stream through the tenant's KMS, audited like every
// byok component's KMS calls.
func rewrapCmd(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flagenv.New("byokctl rewrap")
	fs.SetOutput(errOut)
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers")
	auditTopic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "audit topic")
	tenantID := fs.String("tenant", "BYOK_CTL_TENANT", "", "tenant id")
	provider := fs.String("provider", "BYOK_CTL_PROVIDER", "", "vault, yandex, cloudru or local")
	kekID := fs.String("kek-id", "BYOK_CTL_KEK_ID", "", "the tenant's key id in its KMS")
	credFile := fs.String("credential-file", "BYOK_CTL_CREDENTIAL_FILE", "", "file holding the provider's credential JSON")
	from := fs.String("from-topic", "BYOK_CTL_FROM_TOPIC", kafkax.TopicStored, "storage topic to read")
	to := fs.String("to-topic", "BYOK_CTL_TO_TOPIC", "", "new topic that receives the copy (created if missing)")
	method := fs.String("method", "BYOK_CTL_REWRAP_METHOD", "", `"rewrap" (in the KMS: the DEK never leaves it) or "unwrap-wrap" (the DEK is in byokctl's memory for one batch); see docs/rotation.md`)
	batch := fs.Int("batch", "BYOK_CTL_BATCH", rotate.DefaultMaxBatch, "records per batch, and distinct DEKs per KMS call")
	loopback := fs.Bool("kms-insecure-loopback", "BYOK_KMS_INSECURE_LOOPBACK", false, "dev/test only: plaintext gRPC to a loopback KMS endpoint")
	timeout := fs.Duration("timeout", "BYOK_CTL_TIMEOUT", time.Hour, "give up after")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *tenantID == "" || *provider == "" || *kekID == "" || *credFile == "" || *to == "" || *method == "" {
		fmt.Fprintln(errOut, "byokctl: -tenant, -provider, -kek-id, -credential-file, -to-topic and -method are required")
		return 2
	}
	m := rotate.Method(*method)
	if m != rotate.MethodRewrap && m != rotate.MethodUnwrapWrap {
		fmt.Fprintf(errOut, "byokctl: -method %q: want %q or %q\n", *method, rotate.MethodRewrap, rotate.MethodUnwrapWrap)
		return 2
	}
	cred, err := os.ReadFile(*credFile)
	if err != nil {
		fmt.Fprintf(errOut, "byokctl: cannot read -credential-file %s\n", *credFile)
		return 2
	}
	k, err := registry.OpenWith(registry.Options{InsecureLoopback: *loopback}, *provider, *kekID, cred)
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	defer k.Close()
	sink := audit.NewKafkaSink(*brokers, *auditTopic)
	defer sink.Close()
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	audited := audit.Wrap(k, *tenantID, audit.NewLog(sink, "byokctl"), audit.Access{ActorService: "byokctl", ActorUser: who, Purpose: "rewrap"})

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := rotate.Stream(ctx, audited, rotate.StreamConfig{
		Brokers: *brokers, From: *from, To: *to, TenantID: *tenantID,
		Options: rotate.Options{Method: m, MaxBatch: *batch}, BatchRecords: *batch,
	})
	fmt.Fprintf(out, "rewrap of tenant %s (%s key %s, method %s): %s → %s\n", *tenantID, *provider, *kekID, m, *from, *to)
	fmt.Fprintf(out, "  read %d, written %d; source end offsets %s\n", rep.Read, rep.Written, offsets(rep.EndOffsets))
	fmt.Fprintf(out, "  rewrapped %d to KEK version %s, already current %d\n", rep.Rewrapped, orDash(rep.Version), rep.Current)
	fmt.Fprintf(out, "  copied unchanged: %d of other tenants or without an envelope, %d that failed\n", rep.Copied, rep.Failed)
	for _, f := range rep.Failures {
		fmt.Fprintln(out, "  failed:", f)
	}
	if err != nil {
		fmt.Fprintln(errOut, "byokctl: stopped:", err)
		return 1
	}
	if rep.Failed > 0 {
		fmt.Fprintf(out, "FAILED: %d envelopes were copied without a rewrap; do not retire older versions before they are fixed\n", rep.Failed)
		return 1
	}
	fmt.Fprintf(out, "ok: every envelope of tenant %s in %s is at the latest version; switch readers to it before retiring older versions\n", *tenantID, *to)
	return 0
}

// offsets prints partition=offset pairs in partition order.
func offsets(m map[int]int64) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for p := range len(m) {
		if o, ok := m[p]; ok {
			parts = append(parts, fmt.Sprintf("%d=%d", p, o))
		}
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
