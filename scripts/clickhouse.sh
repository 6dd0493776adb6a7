#!/usr/bin/env bash
# clickhouse.sh install|start|stop|restart|reset|status|addr: a single ClickHouse server for the audit
# store, bound to 127.0.0.1, with a config generated here (the packaged one also opens 9000, 8123,
# 9009 and listens on ::1). Debian bookworm ships clickhouse-server 18.16; a newer server binary
# works too (CLICKHOUSE_SERVER_BIN). Runs as user `clickhouse` when started by root.
#   CLICKHOUSE_PORT (native, default 19000)   CLICKHOUSE_HTTP_PORT (default 18123)
#   CLICKHOUSE_SERVER_BIN (default /usr/sbin/clickhouse-server)
source "$(dirname "$0")/lib.sh"

CLICKHOUSE_PORT="${CLICKHOUSE_PORT:-19000}"
CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-18123}"
CLICKHOUSE_SERVER_BIN="${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}"
STATE="$BYOK_RUN/clickhouse"
RUN_AS=clickhouse

install() {
  if [ -x "$CLICKHOUSE_SERVER_BIN" ] || [ -x /usr/bin/clickhouse-server ]; then return 0; fi
  [ "$(id -u)" = 0 ] || die "clickhouse-server is not installed; as root run: apt-get install -y clickhouse-server clickhouse-client"
  log "installing clickhouse-server and clickhouse-client from the distribution"
  # A fresh machine has no package lists yet; refresh them if the first attempt cannot find the package.
  DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client >"$BYOK_RUN/clickhouse-install.log" 2>&1 \
    || { apt-get update -qq >>"$BYOK_RUN/clickhouse-install.log" 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client >>"$BYOK_RUN/clickhouse-install.log" 2>&1; } \
    || { tail -20 "$BYOK_RUN/clickhouse-install.log" >&2; die "apt-get install clickhouse-server failed"; }
}

server_bin() {
  if [ -x "$CLICKHOUSE_SERVER_BIN" ]; then echo "$CLICKHOUSE_SERVER_BIN"; else echo /usr/bin/clickhouse-server; fi
}

addr() { echo "127.0.0.1:$CLICKHOUSE_PORT"; }
ready() { [ "$(curl -fsS "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }

# write_config: only the ports asked for, on 127.0.0.1, no interserver/https/secure-native/graphite
# listeners, UTC (audit partitions are UTC months), state under $STATE.
write_config() {
  mkdir -p "$STATE"/{data,tmp,user_files,format_schemas,log}
  cat > "$STATE/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$STATE/log/clickhouse-server.log</log>
        <errorlog>$STATE/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CLICKHOUSE_HTTP_PORT</http_port>
    <tcp_port>$CLICKHOUSE_PORT</tcp_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$STATE/data/</path>
    <tmp_path>$STATE/tmp/</tmp_path>
    <user_files_path>$STATE/user_files/</user_files_path>
    <format_schema_path>$STATE/format_schemas/</format_schema_path>
    <users_config>$STATE/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <merge_tree>
        <!-- a test box, not a cluster: keep background merges from holding many parts -->
        <parts_to_delay_insert>300</parts_to_delay_insert>
    </merge_tree>
</yandex>
XML
  cat > "$STATE/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
                <read_rows>0</read_rows><execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
  if [ "$(id -u)" = 0 ]; then chown -R "$RUN_AS:$RUN_AS" "$STATE"/{data,tmp,user_files,format_schemas,log}; fi
}

start() {
  install
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then log "already running"; return 0; fi
  write_config
  local -a as=()
  if [ "$(id -u)" = 0 ]; then
    id "$RUN_AS" >/dev/null 2>&1 || die "user $RUN_AS missing (the clickhouse-server package creates it)"
    as=(setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups)
  fi
  log "starting ClickHouse ($("$(server_bin)" --version 2>/dev/null | head -1 || true)) on 127.0.0.1:$CLICKHOUSE_PORT (http $CLICKHOUSE_HTTP_PORT)"
  # setpriv execs the server, so $! is the server's pid. cwd is the state dir (the server may write
  # core files or status files into it).
  (cd "$STATE/data" && exec nohup "${as[@]}" "$(server_bin)" --config-file="$STATE/config.xml" \
    >"$STATE/log/stdout.log" 2>&1) &
  echo $! > "$STATE/pid"
  local deadline=$(( $(date +%s) + 30 ))
  until ready; do
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      tail -20 "$STATE/log/clickhouse-server.err.log" "$STATE/log/stdout.log" >&2 2>/dev/null || true
      rm -f "$STATE/pid"
      die "clickhouse-server exited during start"
    fi
    [ "$(date +%s)" -ge "$deadline" ] && die "clickhouse not ready after 30s"
    sleep 0.1
  done
  log "clickhouse ready at $(addr)"
}

stop() { stop_pidfile "$STATE/pid" clickhouse; }

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  reset) stop; rm -rf "$STATE" ;;
  addr) addr ;;
  status) ready && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 install|start|stop|restart|reset|status|addr" >&2; exit 2 ;;
esac
