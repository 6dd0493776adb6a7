# shellcheck shell=bash
# Shared helpers for the scripts that fetch, start and stop byok's real dependencies.
# Everything downloaded or built lives under $BYOK_CACHE (default: <repo>/.cache, ignored by git)
# and is reused; runtime state (data dirs, logs, pids) lives under $BYOK_RUN (default: <repo>/.run).
set -euo pipefail

BYOK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BYOK_CACHE="${BYOK_CACHE:-$BYOK_ROOT/.cache}"
BYOK_RUN="${BYOK_RUN:-$BYOK_ROOT/.run}"
mkdir -p "$BYOK_CACHE" "$BYOK_RUN"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for NAME TIMEOUT_SECONDS CMD...: runs CMD until it succeeds or the timeout passes.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && die "$name not ready after ${timeout}s"
    sleep 0.3
  done
  log "$name ready"
}

# stop_pidfile FILE NAME: TERM, wait up to 20 s, then KILL.
stop_pidfile() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || { log "$name not running"; return 0; }
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop; killing"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$file"
  log "$name stopped"
}
