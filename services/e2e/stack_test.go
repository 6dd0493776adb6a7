package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/byok-io/byok/pkg/kafkax"
)

// pipelineTopics are one test run's topics of the encrypt path.
type pipelineTopics struct{ in, stored, dead, audit string }

// newPipelineTopics creates run's plaintext, storage (6 partitions each), dead-letter and audit
// (3 partitions: readAudit reads 3) topics.
func newPipelineTopics(t *testing.T, ctx context.Context, brokers []string, run string) pipelineTopics {
	t.Helper()
	tp := pipelineTopics{run + ".plaintext", run + ".stored", run + ".deadletter", run + ".audit"}
	if err := kafkax.EnsureTopics(ctx, brokers,
		kafkax.TopicSpec{Name: tp.in, Partitions: 6},
		kafkax.TopicSpec{Name: tp.stored, Partitions: 6},
		kafkax.TopicSpec{Name: tp.dead, Partitions: 1},
		kafkax.TopicSpec{Name: tp.audit, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	return tp
}

// derivedKeysAndToken does what the README asks of a customer's security team: a derived transit
// key per name, and a token (with the given id) whose policy allows only encrypt, decrypt and
// reading those keys.
func derivedKeysAndToken(t *testing.T, admin *vaultapi.Client, policyName, tokenID string, keys ...string) {
	t.Helper()
	var policy strings.Builder
	for _, k := range keys {
		if _, err := admin.Logical().Write("transit/keys/"+k, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&policy, "path \"transit/encrypt/%s\" { capabilities = [\"update\"] }\n", k)
		fmt.Fprintf(&policy, "path \"transit/decrypt/%s\" { capabilities = [\"update\"] }\n", k)
		fmt.Fprintf(&policy, "path \"transit/keys/%s\" { capabilities = [\"read\"] }\n", k)
	}
	if err := admin.Sys().PutPolicy(policyName, policy.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Auth().Token().Create(&vaultapi.TokenCreateRequest{ID: tokenID, Policies: []string{policyName}, NoDefaultPolicy: true, TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
}
