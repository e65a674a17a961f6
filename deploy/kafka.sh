#!/usr/bin/env bash
# Start a single-node Apache Kafka 4.1.2 broker (KRaft, broker+controller)
# on 127.0.0.1:9092 and wait until clients can use it. Idempotent, no prompts.
#
#   deploy/kafka.sh              start (or reuse) and wait until ready
#   KAFKA_BOOTSTRAP=h:p deploy/kafka.sh   start nothing, only wait for h:p
#   deploy/kafka.sh stop         stop the broker this script started
#
# The broker's jars come from Maven Central (deploy/kafka/pom.xml) into
# .cache/kafka-<version>/libs, fetched once. Config, data, pid and logs live
# in .run/kafka/ and .run/kafka.pid; the log is .run/kafka/server.log.
# Env: KAFKA_WAIT_S (default 90) bounds the wait, KAFKA_HEAP (default 512m).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=4.1.2                       # keep in step with deploy/kafka/pom.xml
ADDR=127.0.0.1:9092
CONTROLLER_ADDR=127.0.0.1:9093
POM="$ROOT/deploy/kafka/pom.xml"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
STATE="$RUN_DIR/kafka"
PIDFILE="$RUN_DIR/kafka.pid"
WAIT_S="${KAFKA_WAIT_S:-90}"
MAIN_CLASS=kafka.Kafka

if [[ "${1:-}" == stop ]]; then
  stop_pidfile kafka "$PIDFILE" "$MAIN_CLASS"
  exit 0
fi

# An external broker: only wait for it.
if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
  log "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP set, not starting a broker"
  wait_until "$WAIT_S" "kafka at $KAFKA_BOOTSTRAP" "${PROBE[@]}" kafka "$KAFKA_BOOTSTRAP"
  exit
fi

# Ours, already running; or another Kafka already listening on the port.
if "${PROBE[@]}" kafka "$ADDR" 2>/dev/null; then
  if pid_alive "$PIDFILE" "$MAIN_CLASS"; then
    log "already running (pid $(<"$PIDFILE")) on $ADDR"
  else
    log "a Kafka broker not started by us already answers on $ADDR, using it"
  fi
  exit 0
fi
if pid_alive "$PIDFILE" "$MAIN_CLASS"; then
  # Started by us but not answering yet (e.g. a concurrent `make up`).
  WATCH_PIDFILE="$PIDFILE" wait_until "$WAIT_S" "kafka on $ADDR" "${PROBE[@]}" kafka "$ADDR"
  exit
fi
for port_addr in "$ADDR" "$CONTROLLER_ADDR"; do
  if port_open "${port_addr%:*}" "${port_addr##*:}"; then
    die "port ${port_addr##*:} is taken by something that is not our Kafka; free it or set KAFKA_BOOTSTRAP"
  fi
done

JAVA_HINT="apt-get install -y openjdk-17-jre-headless"
need_cmd java "$JAVA_HINT"
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
if ! [[ "${java_major%%.*}" =~ ^[0-9]+$ ]] || (( ${java_major%%.*} < 17 )); then
  die "Kafka $KAFKA_VERSION needs Java 17+, found '${java_major:-unknown}'; install it with: $JAVA_HINT"
fi

# 1. Jars: fetched once per pom content; an interrupted fetch leaves no stamp.
pom_sum="$(sha256sum "$POM" | cut -d' ' -f1)"
if [[ "$(cat "$LIBS/.pom.sha256" 2>/dev/null)" != "$pom_sum" ]]; then
  need_cmd mvn "apt-get install -y maven"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into ${LIBS#"$ROOT"/}"
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$LIBS/../mvn.log" 2>&1 \
    || { cat "$LIBS/../mvn.log" >&2; die "mvn could not fetch the Kafka jars (see above)"; }
  echo "$pom_sum" >"$LIBS/.pom.sha256"
fi

# 2. Config, written every time (cheap, and picks up edits to this script).
mkdir -p "$STATE/data"
cat >"$STATE/server.properties" <<EOF
# Written by deploy/kafka.sh; edits here are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$CONTROLLER_ADDR
listeners=PLAINTEXT://$ADDR,CONTROLLER://$CONTROLLER_ADDR
advertised.listeners=PLAINTEXT://$ADDR
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
# Single node: every internal topic has one replica.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the default 50: faster first group join.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
# A dev/test broker: keep the disk use small.
log.retention.hours=24
log.retention.bytes=268435456
log.segment.bytes=67108864
EOF
cat >"$STATE/log4j2.properties" <<EOF
# Written by deploy/kafka.sh: everything at INFO into server.log.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $STATE/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF

JAVA_OPTS=(
  "-Xms${KAFKA_HEAP:-512m}" "-Xmx${KAFKA_HEAP:-512m}"
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$STATE/log4j2.properties"
  -cp "$LIBS/*"
)

# 3. Storage: formatted once (meta.properties marks a formatted log dir).
if [[ ! -s "$STATE/data/meta.properties" ]]; then
  cluster_id="$(java "${JAVA_OPTS[@]}" kafka.tools.StorageTool random-uuid)"
  log "formatting storage, cluster id $cluster_id"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 \
    || { cat "$STATE/format.log" >&2; die "storage format failed"; }
fi

# 4. Start in the background, in its own session (a Ctrl-C in the calling
# shell does not reach it), and wait until a client gets metadata back.
log "starting Kafka $KAFKA_VERSION on $ADDR (log: ${STATE#"$ROOT"/}/server.log)"
started=$SECONDS
: >"$STATE/server.log"
setsid nohup java "${JAVA_OPTS[@]}" "$MAIN_CLASS" "$STATE/server.properties" \
  >"$STATE/stdout.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"
if ! WATCH_PIDFILE="$PIDFILE" wait_until "$WAIT_S" "kafka on $ADDR" "${PROBE[@]}" kafka "$ADDR"; then
  tail -n 30 "$STATE/server.log" "$STATE/stdout.log" >&2 || true
  stop_pidfile kafka "$PIDFILE" "$MAIN_CLASS" 5
  die "Kafka did not come up (see ${STATE#"$ROOT"/}/server.log)"
fi
grep -q "Kafka Server started" "$STATE/server.log" \
  || log "warning: 'Kafka Server started' not in server.log yet"
log "Kafka up in $((SECONDS - started))s (pid $(<"$PIDFILE"))"
