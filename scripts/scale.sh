#!/usr/bin/env bash
# scale.sh: encryptor throughput with 1, 2 and 3 processes (README "Scaling"). Starts Kafka and
# Vault on their own ports, builds encryptor and loadgen, runs scripts/scale.py, stops them.
#   MSGS (default 1000000)  RUNS (default 3)
source "$(dirname "$0")/lib.sh"
cd "$BYOK_ROOT"
bash scripts/install-deps.sh
export BYOK_RUN="$BYOK_ROOT/.run/scale"
export KAFKA_PORT="${KAFKA_PORT:-49092}" KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-49093}" VAULT_PORT="${VAULT_PORT:-48200}"
stop_all() { for s in kafka vault; do bash "$BYOK_ROOT/scripts/$s.sh" stop >/dev/null 2>&1 || true; done; }
trap stop_all EXIT
bash scripts/kafka.sh reset >/dev/null 2>&1 || true
bash scripts/kafka.sh start
bash scripts/vault.sh start
mkdir -p "$BYOK_RUN/bin" "$BYOK_RUN/logs"
(cd services && go build -o "$BYOK_RUN/bin/encryptor" ./encryptor && go build -o "$BYOK_RUN/bin/loadgen" ./loadgen)
BROKERS="127.0.0.1:$KAFKA_PORT" VAULT="http://127.0.0.1:$VAULT_PORT" BIN="$BYOK_RUN/bin" LOGS="$BYOK_RUN/logs" \
  KAFKA_LIBS="$BYOK_CACHE/kafka-${KAFKA_VERSION:-4.1.1}/libs" MSGS="${MSGS:-1000000}" RUNS="${RUNS:-3}" \
  python3 scripts/scale.py
