#!/usr/bin/env bash
# test.sh: every test of byok, on a fresh Debian machine. Installs what is missing (protoc from
# Debian), fetches/builds and starts a real Kafka and a real Vault on their own ports (cached
# downloads in .cache/), runs the checks and all Go tests with the integration tests required,
# and stops what it started. `make test` and CI call this.
source "$(dirname "$0")/lib.sh"
cd "$BYOK_ROOT"

# Test instances use their own ports and state so they never touch a dev instance.
export BYOK_RUN="$BYOK_ROOT/.run/test"
export KAFKA_PORT="${BYOK_TEST_KAFKA_PORT:-29092}" KAFKA_CONTROLLER_PORT="${BYOK_TEST_KAFKA_CONTROLLER_PORT:-29093}"
export VAULT_PORT="${BYOK_TEST_VAULT_PORT:-28200}"
export CLICKHOUSE_PORT="${BYOK_TEST_CLICKHOUSE_PORT:-29000}" CLICKHOUSE_HTTP_PORT="${BYOK_TEST_CLICKHOUSE_HTTP_PORT:-28123}"

step() { printf '\n==> %s\n' "$*" >&2; }

step "tools"
bash scripts/install-deps.sh

step "generated code is up to date (make proto)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bash scripts/gen-proto.sh "$tmp"
diff -r "$tmp/byokv1" pkg/gen/byokv1 >/dev/null || { diff -r "$tmp/byokv1" pkg/gen/byokv1 | head -20 >&2; die "pkg/gen is stale: run 'make proto' and commit"; }

step "gofmt and go vet"
bad=$(gofmt -l pkg services | grep -v '^pkg/gen/' || true)
[ -z "$bad" ] || die "gofmt would change: $bad"
(cd pkg && go vet ./...) && (cd services && go vet ./...)

step "README's configuration table matches the daemons' flags"
python3 scripts/config-table.py --check

step "start Kafka, Vault and ClickHouse"
bash scripts/kafka.sh reset >/dev/null 2>&1 || true
cleanup() {
  bash "$BYOK_ROOT/scripts/kafka.sh" stop || true
  bash "$BYOK_ROOT/scripts/vault.sh" stop || true
  bash "$BYOK_ROOT/scripts/clickhouse.sh" stop || true
  rm -rf "$tmp"
}
trap cleanup EXIT
bash scripts/kafka.sh start
bash scripts/vault.sh start
bash scripts/clickhouse.sh reset >/dev/null 2>&1 || true
bash scripts/clickhouse.sh start
export BYOK_TEST_CLICKHOUSE_ADDR="127.0.0.1:$CLICKHOUSE_PORT"
export BYOK_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export BYOK_TEST_VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" BYOK_TEST_VAULT_TOKEN=root
export BYOK_REQUIRE_INTEGRATION=1

step "unit and integration tests (race detector on)"
(cd pkg && go test -race -count=1 ./...)
(cd services && go test -race -count=1 $(go list ./... | grep -v /e2e))

step "end-to-end: the service binaries on real Kafka, Vault and ClickHouse (encrypt path, rolling restart, settings, revocation)"
(cd services && go test -count=1 -v -timeout 10m ./e2e/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)')

step "fuzz the envelope parser (20s)"
(cd pkg && go test -run '^$' -fuzz FuzzParse -fuzztime 20s ./envelope/)

step "all tests passed"
