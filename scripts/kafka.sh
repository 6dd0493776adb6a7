#!/usr/bin/env bash
# kafka.sh fetch|start|stop|status: a single-node Apache Kafka 4.x broker (KRaft, broker+controller)
# from the Maven Central jars, bound to 127.0.0.1. No Docker, no tarball download site.
#   KAFKA_VERSION (default 4.1.1)   KAFKA_PORT (default 19092)   KAFKA_PARTITIONS (default 6)
source "$(dirname "$0")/lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
LIBS="$BYOK_CACHE/kafka-$KAFKA_VERSION/libs"
STATE="$BYOK_RUN/kafka"

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (install maven and a JDK 17)"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  local pom; pom=$(mktemp -d)
  cat > "$pom/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>byok</groupId><artifactId>kafka-fetch</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
POM
  mkdir -p "$LIBS"
  (cd "$pom" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS") \
    || die "maven could not fetch Kafka $KAFKA_VERSION"
  rm -rf "$pom"
  touch "$LIBS/.complete"
}

ready() {
  # A real Kafka request (ApiVersions+Metadata) through the broker's own admin tool is slow to start
  # (JVM); a TCP connect plus the log line is enough for "accepting connections".
  grep -q 'Kafka Server started' "$STATE/server.log" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
}

start() {
  fetch
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then log "already running"; return 0; fi
  mkdir -p "$STATE"
  cat > "$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/data
num.partitions=${KAFKA_PARTITIONS:-6}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
PROPS
  cat > "$STATE/log4j.properties" <<'L4J'
log4j.rootLogger=WARN, stdout
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
L4J
  if [ ! -f "$STATE/data/meta.properties" ]; then
    java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null || echo byok-dev-cluster-0001aa)" \
      -c "$STATE/server.properties" --standalone >"$STATE/format.log" 2>&1 \
      || java -cp "$LIBS/*" kafka.tools.StorageTool format -t "q1Sh-9_ISia_zwGINzRvyQ" -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 \
      || { cat "$STATE/format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1g -Xms256m}"
  # shellcheck disable=SC2086
  nohup java $KAFKA_HEAP_OPTS -XX:+UseG1GC -Dlog4j.configuration="file:$STATE/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$STATE/server.properties" >"$STATE/server.log" 2>&1 &
  echo $! > "$STATE/pid"
  wait_for kafka 90 ready
}

stop() { stop_pidfile "$STATE/pid" kafka; }

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$STATE" ;;
  status) ready && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 fetch|start|stop|reset|status" >&2; exit 2 ;;
esac
