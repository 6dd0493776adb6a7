#!/usr/bin/env bash
# vault.sh build|start|stop|status: a HashiCorp Vault dev server (v1.13.2, the last MPL-2.0 line that
# builds on Go 1.26) built from the Go module proxy into $BYOK_CACHE and reused, bound to 127.0.0.1.
# The first build takes ~5 minutes on 2 cores; later runs reuse the binary.
#   VAULT_VERSION (default v1.13.2)   VAULT_PORT (default 18200)   VAULT_DEV_ROOT_TOKEN (default root)
source "$(dirname "$0")/lib.sh"

VAULT_VERSION="${VAULT_VERSION:-v1.13.2}"
VAULT_PORT="${VAULT_PORT:-18200}"
VAULT_DEV_ROOT_TOKEN="${VAULT_DEV_ROOT_TOKEN:-root}"
BIN="$BYOK_CACHE/vault-$VAULT_VERSION/vault"
STATE="$BYOK_RUN/vault"

build() {
  [ -x "$BIN" ] && return 0
  log "building Vault $VAULT_VERSION from the Go module proxy (first time only, ~5 min)"
  local mod="$BYOK_CACHE/vault-$VAULT_VERSION/build"
  mkdir -p "$mod"
  (
    cd "$mod"
    export GOWORK=off GOFLAGS=-mod=mod
    [ -f go.mod ] || go mod init vaulttool >/dev/null 2>&1
    # Vault 1.13's CA parsing panics on Go 1.26 without this godebug setting (see shared/STACK.md).
    go mod edit -godebug=x509negativeserial=1
    go get -tool "github.com/hashicorp/vault@$VAULT_VERSION" >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
    go build -ldflags='-s -w' -o "$BIN.tmp" github.com/hashicorp/vault >>build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
    mv "$BIN.tmp" "$BIN"
  ) || die "vault build failed"
  log "built $BIN"
}

addr() { echo "http://127.0.0.1:$VAULT_PORT"; }
ready() { curl -fsS "$(addr)/v1/sys/health" >/dev/null; }

start() {
  build
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then log "already running"; return 0; fi
  mkdir -p "$STATE"
  log "starting Vault dev server on $(addr)"
  GODEBUG=x509negativeserial=1 nohup "$BIN" server -dev \
    -dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-root-token-id="$VAULT_DEV_ROOT_TOKEN" \
    >"$STATE/server.log" 2>&1 &
  echo $! > "$STATE/pid"
  wait_for vault 60 ready
  # Transit is where tenants' KEKs live.
  curl -fsS -X POST -H "X-Vault-Token: $VAULT_DEV_ROOT_TOKEN" -d '{"type":"transit"}' \
    "$(addr)/v1/sys/mounts/transit" >/dev/null 2>&1 || true
}

stop() { stop_pidfile "$STATE/pid" vault; }

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  addr) addr ;;
  status) ready && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 build|start|stop|status|addr" >&2; exit 2 ;;
esac
