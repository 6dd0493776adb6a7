// Package testenv finds the real dependencies (Kafka, Vault) that integration tests run against.
// `make test` starts them and exports their addresses; a plain `go test` without them skips the
// integration tests, unless BYOK_REQUIRE_INTEGRATION=1 (set by `make test` and CI), in which case
// a missing dependency fails the test instead of hiding it.
package testenv

import (
	"os"
	"strings"
	"testing"
)

func need(t testing.TB, name, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is required (BYOK_REQUIRE_INTEGRATION=1) but %s is not set; run `make test`", name, env)
		}
		t.Skipf("%s not available: set %s or run `make test`", name, env)
	}
	return v
}

// Vault returns the address and a root token of a running Vault with transit mounted.
func Vault(t testing.TB) (addr, token string) {
	t.Helper()
	addr = need(t, "Vault", "BYOK_TEST_VAULT_ADDR")
	token = os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if token == "" {
		token = "root"
	}
	return addr, token
}

// Kafka returns the bootstrap brokers of a running Kafka.
func Kafka(t testing.TB) []string {
	t.Helper()
	return strings.Split(need(t, "Kafka", "BYOK_TEST_KAFKA_BROKERS"), ",")
}
