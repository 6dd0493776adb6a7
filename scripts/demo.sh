#!/usr/bin/env bash
# demo.sh: runs the encrypt path end to end on a real Kafka and a real Vault (started here,
# cached in .cache/; the first Vault build takes ~5 minutes), then stops them.
#   scripts/demo.sh [demo flags, e.g. -messages 10000]
source "$(dirname "$0")/lib.sh"
cd "$BYOK_ROOT"
bash scripts/install-deps.sh
export BYOK_RUN="$BYOK_ROOT/.run/demo"
export KAFKA_PORT="${KAFKA_PORT:-19092}" VAULT_PORT="${VAULT_PORT:-18200}"
stop_all() { bash "$BYOK_ROOT/scripts/kafka.sh" stop >/dev/null 2>&1 || true; bash "$BYOK_ROOT/scripts/vault.sh" stop >/dev/null 2>&1 || true; }
trap stop_all EXIT
bash scripts/kafka.sh start
bash scripts/vault.sh start
cd services && go run ./demo -brokers "127.0.0.1:$KAFKA_PORT" -vault-addr "http://127.0.0.1:$VAULT_PORT" -vault-token root "$@"
