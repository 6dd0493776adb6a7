#!/usr/bin/env bash
# bench.sh: the encrypt-path benchmark on a real Kafka (and, for the KMS rows, a real Vault),
# started here and stopped afterwards. Extra arguments go to the bench command.
source "$(dirname "$0")/lib.sh"
cd "$BYOK_ROOT"
bash scripts/install-deps.sh
export BYOK_RUN="$BYOK_ROOT/.run/bench"
export KAFKA_PORT="${KAFKA_PORT:-39092}" KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-39093}" VAULT_PORT="${VAULT_PORT:-38200}"
export CLICKHOUSE_PORT="${CLICKHOUSE_PORT:-39000}" CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-38123}"
stop_all() {
  for s in kafka vault clickhouse; do bash "$BYOK_ROOT/scripts/$s.sh" stop >/dev/null 2>&1 || true; done
}
trap stop_all EXIT
bash scripts/kafka.sh reset >/dev/null 2>&1 || true
bash scripts/kafka.sh start
bash scripts/vault.sh start
bash scripts/clickhouse.sh start
cd services && go build -o "$BYOK_RUN/bench" ./bench
"$BYOK_RUN/bench" -brokers "127.0.0.1:$KAFKA_PORT" "$@"
"$BYOK_RUN/bench" -brokers "127.0.0.1:$KAFKA_PORT" -kms vault -vault-addr "http://127.0.0.1:$VAULT_PORT" \
  -messages 200000 -chats 100000 -tenants 1 -rounds 1 -scopes-max 1000000 \
  -audit-clickhouse "127.0.0.1:$CLICKHOUSE_PORT"
