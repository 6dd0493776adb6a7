package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/kms/local"
)

func TestTenantValidateThenAuditVerify(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, audit.TopicAudit))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	if err := local.WriteKeyFile(keys, "kek", "off"); err != nil {
		t.Fatal(err)
	}
	_ = local.Update(keys, func(f *local.File) { f.Keys["off"].Disabled = true })
	credFile := filepath.Join(dir, "cred.json")
	cred, _ := json.Marshal(map[string]string{"key_file": keys})
	if err := os.WriteFile(credFile, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	call := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	base := []string{"-brokers", brokers, "-tenant", "acme", "-provider", "local", "-credential-file", credFile}
	if code, out := call(append([]string{"tenant", "validate", "-kek-id", "kek"}, base...)...); code != 0 || !strings.Contains(out, "ok:") {
		t.Fatalf("validate(good) = %d %s", code, out)
	}
	if code, out := call(append([]string{"tenant", "validate", "-kek-id", "off"}, base...)...); code != 1 || !strings.Contains(out, "INVALID") || !strings.Contains(out, "disabled") {
		t.Fatalf("validate(disabled key) = %d %s", code, out)
	}
	if code, _ := call("tenant", "validate", "-brokers", brokers); code != 2 {
		t.Fatalf("validate without required flags = %d, want 2", code)
	}
	// The validations were audited (describe, wrap, unwrap; then a denied describe) and chain.
	code, out := call("audit", "verify", "-brokers", brokers)
	if code != 0 || !strings.Contains(out, "4 events, 2 chains, 0 broken") { // one chain per byokctl run
		t.Fatalf("audit verify = %d %s", code, out)
	}
	events, err := audit.ReadTopic(ctx, strings.Split(brokers, ","), audit.TopicAudit)
	if err != nil {
		t.Fatal(err)
	}
	if e := events[0]; e.ActorService != "byokctl" || e.Purpose != "validate" || e.ActorUser == "" {
		t.Fatalf("validation event = %v, want actor byokctl, a user, purpose validate", e)
	}
}
