#!/usr/bin/env bash
# A local Redis Cluster from Debian's redis-server: 3 masters and 3 replicas
# on 127.0.0.1:7100-7105, for the tests and benchmarks that need a cluster.
# Idempotent, no prompts. Each node persists as deploy/redis.sh's server does
# (append-only file, fsynced before each reply) and is started with
# --cluster-enabled yes --cluster-config-file nodes.conf
# --cluster-node-timeout 3000 in a directory of its own, and with
# --repl-diskless-sync-delay 0: a master otherwise waits 5 s for more replicas
# before it sends a new one its data (also a killed master that comes back).
#
#   deploy/redis-cluster.sh up       start the nodes (or reuse running ones),
#                                    `redis-cli --cluster create` them when new,
#                                    wait until healthy; installs Debian's
#                                    redis-server when missing
#   deploy/redis-cluster.sh down     stop the nodes this script started on the
#                                    ports (data kept)
#   deploy/redis-cluster.sh status   one line a node; exit 0 healthy, 1 running
#                                    but not healthy, 3 none of ours running
#   deploy/redis-cluster.sh start-node PORT
#                                    start one of our nodes again (after a test
#                                    killed it) and wait until the cluster is
#                                    healthy: a killed master comes back as a
#                                    replica of the node that took its slots
#   deploy/redis-cluster.sh reset    down, then remove the nodes' data
#   REDIS_CLUSTER_URL=redis://h:p deploy/redis-cluster.sh up
#                                    start nothing, only wait for that cluster
#                                    to say cluster_state:ok
#
# Healthy means: every node answers and says cluster_state:ok, knows every
# node and sees none failing; there are as many masters serving slots as
# replicas, every master has a replica, and every replica has finished its
# sync (INFO replication: master_link_status:up). A replica that never synced
# refuses to fail over ("Disconnected from master for longer than allowed" in
# its log), so a test must not kill a master before that.
#
# Data, log and nodes.conf of a node: .run/redis-cluster/PORT/ (redis.log);
# its pid: .run/redis-cluster/PORT.pid; `redis-cli --cluster create`'s output:
# .run/redis-cluster/create.log.
# Env: REDIS_CLUSTER_PORTS (default "7100 7101 7102 7103 7104 7105"; an even
#      number, at least 6, comma or space separated; each port's cluster bus is
#      port + 10000), REDIS_CLUSTER_NODE_TIMEOUT (ms, default 3000),
#      REDIS_CLUSTER_NODE_ARGS (more redis-server options for every node, e.g.
#      "--cluster-replica-validity-factor 0"), REDIS_CLUSTER_WAIT_S (default 60)
#      bounds each wait.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
STATE="$RUN_DIR/redis-cluster"
WAIT_S="${REDIS_CLUSTER_WAIT_S:-60}"
NODE_TIMEOUT_MS="${REDIS_CLUSTER_NODE_TIMEOUT:-3000}"
PORTS_SPEC="${REDIS_CLUSTER_PORTS:-7100 7101 7102 7103 7104 7105}"
read -r -a PORTS <<<"${PORTS_SPEC//,/ }"
read -r -a NODE_ARGS <<<"${REDIS_CLUSTER_NODE_ARGS:-}"
N=${#PORTS[@]}

usage() {
  echo "usage: deploy/redis-cluster.sh up|down|status|reset|start-node PORT" >&2
  exit 2
}

check_settings() {
  local port seen=" "
  (( N >= 6 && N % 2 == 0 )) || die "REDIS_CLUSTER_PORTS: want an even number of ports, at least 6 (got $N)"
  for port in "${PORTS[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] && (( port >= 1024 && port <= 55535 )) \
      || die "REDIS_CLUSTER_PORTS: '$port' is not a port in 1024-55535 (its cluster bus is port + 10000)"
    [[ "$seen" != *" $port "* ]] || die "REDIS_CLUSTER_PORTS: port $port given twice"
    seen+="$port "
  done
  [[ "$NODE_TIMEOUT_MS" =~ ^[0-9]+$ ]] || die "REDIS_CLUSTER_NODE_TIMEOUT: want milliseconds, got '$NODE_TIMEOUT_MS'"
}

pidfile() { echo "$STATE/$1.pid"; }
# ours PORT: true when the node on PORT is the one we started (its pid file names a live process whose
# title redis-server set to "redis-server 127.0.0.1:PORT [cluster]": not a recycled pid, not another Redis).
ours() { pid_alive "$(pidfile "$1")" "redis-server $HOST:$1"; }

# cli PORT ARGS...: redis-cli against one node, bounded in time, without the \r of the replies.
cli() {
  local port="$1"
  shift
  timeout 5 redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null | tr -d '\r'
  return "${PIPESTATUS[0]}"
}

# field NAME TEXT: the value of NAME:value in an INFO-style TEXT.
field() { sed -n "s/^$1://p" <<<"$2" | head -n 1; }

# healthy: true when the cluster on PORTS is healthy (see the header); says why not on stderr.
healthy() {
  local port info repl nodes role connected masters=0 replicas=0 half=$((N / 2))
  for port in "${PORTS[@]}"; do
    info="$(cli "$port" cluster info)" && [[ -n "$info" ]] || { echo "node $port does not answer" >&2; return 1; }
    if [[ "$(field cluster_state "$info")" != ok ]]; then
      echo "node $port: cluster_state:$(field cluster_state "$info")," \
        "slots assigned $(field cluster_slots_assigned "$info"), knows $(field cluster_known_nodes "$info") nodes" >&2
      return 1
    fi
    [[ "$(field cluster_known_nodes "$info")" == "$N" && "$(field cluster_size "$info")" == "$half" ]] || {
      echo "node $port knows $(field cluster_known_nodes "$info") nodes and $(field cluster_size "$info")" \
        "masters with slots, want $N and $half (another cluster's nodes? see: deploy/redis-cluster.sh reset)" >&2
      return 1
    }
    nodes="$(cli "$port" cluster nodes | awk '$3 ~ /(^|,)(fail\??|handshake|noaddr)(,|$)/ { print $2 " " $3 }')"
    [[ -z "$nodes" ]] || { echo "node $port sees: $(tr '\n' ' ' <<<"$nodes")" >&2; return 1; }
    repl="$(cli "$port" info replication)"
    role="$(field role "$repl")"
    if [[ "$role" == master ]]; then
      masters=$((masters + 1))
      connected="$(field connected_slaves "$repl")"
      (( ${connected:-0} >= 1 )) || { echo "master $port has no replica connected" >&2; return 1; }
    else
      replicas=$((replicas + 1))
      [[ "$(field master_link_status "$repl")" == up ]] || {
        echo "replica $port: master_link_status:$(field master_link_status "$repl")" \
          "(sync in progress: $(field master_sync_in_progress "$repl"))" >&2
        return 1
      }
    fi
  done
  (( masters == half && replicas == half )) || { echo "$masters masters and $replicas replicas, want $half of each" >&2; return 1; }
}

# blank PORT: true when the node belongs to no cluster yet (a first start: nodes.conf knows itself only).
blank() {
  local info
  info="$(cli "$1" cluster info)"
  [[ "$(field cluster_known_nodes "$info")" == 1 && "$(field cluster_slots_assigned "$info")" == 0 ]]
}

start_node() {
  local port="$1" dir="$STATE/$1"
  mkdir -p "$dir"
  rm -f "$(pidfile "$port")"
  redis-server --daemonize yes --bind "$HOST" --port "$port" \
    --pidfile "$(pidfile "$port")" --dir "$dir" --logfile "$dir/redis.log" \
    --save "" --appendonly yes --appendfsync always \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT_MS" \
    --repl-diskless-sync-delay 0 \
    "${NODE_ARGS[@]}" \
    || die "redis-server did not start on port $port (see ${dir#"$ROOT"/}/redis.log)"
}

node_answers() { [[ "$(cli "$1" ping)" == PONG ]]; }

# wait_node PORT: until the node answers PING; fails at once when its process is gone (it writes its
# pid file once listening, so a node that is not ours 2 s after its start will not come up).
wait_node() {
  local tenths=0
  until node_answers "$1"; do
    if (( tenths >= WAIT_S * 10 )) || { (( tenths >= 20 )) && ! ours "$1"; }; then
      tail -n 20 "$STATE/$1/redis.log" >&2 || true
      die "node $1 did not come up (see ${STATE#"$ROOT"/}/$1/redis.log)"
    fi
    sleep 0.1
    tenths=$((tenths + 1))
  done
}

wait_healthy() {
  wait_until "$WAIT_S" "cluster on $HOST:${PORTS[0]}-${PORTS[N - 1]}" healthy \
    || die "the cluster is not healthy (logs: ${STATE#"$ROOT"/}/PORT/redis.log; start afresh: deploy/redis-cluster.sh reset)"
}

need_packages() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install "$STATE/apt.log" redis-server redis-tools
  fi
}

up() {
  local port mine=0 started=()
  if [[ -n "${REDIS_CLUSTER_URL:-}" ]]; then
    log "REDIS_CLUSTER_URL set, not starting a cluster"
    need_cmd redis-cli "apt-get install -y redis-tools"
    wait_until "$WAIT_S" "redis cluster at $REDIS_CLUSTER_URL" \
      bash -c 'timeout 5 redis-cli -u "$1" cluster info | grep -q "^cluster_state:ok"' _ "$REDIS_CLUSTER_URL" \
      || die "no healthy Redis Cluster at REDIS_CLUSTER_URL=$REDIS_CLUSTER_URL"
    return
  fi
  check_settings
  need_packages
  for port in "${PORTS[@]}"; do ours "$port" && mine=$((mine + 1)); done
  if healthy 2>/dev/null; then
    if (( mine == N )); then
      log "already running and healthy on $HOST:${PORTS[*]}"
    else
      log "a healthy Redis Cluster answers on $HOST:${PORTS[*]} ($mine of its $N nodes started by us), using it"
    fi
    return
  fi
  for port in "${PORTS[@]}"; do
    ours "$port" && continue
    port_open "$HOST" "$port" \
      && die "port $port is taken by a process not started by this script; free it or set REDIS_CLUSTER_PORTS"
    port_open "$HOST" $((port + 10000)) && die "port $((port + 10000)) (the cluster bus of $port) is taken"
  done
  mkdir -p "$STATE"
  local begun=$SECONDS
  for port in "${PORTS[@]}"; do
    ours "$port" && continue
    start_node "$port"
    started+=("$port")
  done
  (( ${#started[@]} )) && log "started $(redis-server --version | cut -d' ' -f1-3) on ports ${started[*]}"
  for port in "${PORTS[@]}"; do wait_node "$port"; done
  local n_blank=0
  for port in "${PORTS[@]}"; do blank "$port" && n_blank=$((n_blank + 1)); done
  if (( n_blank == N )); then
    local addresses=()
    for port in "${PORTS[@]}"; do addresses+=("$HOST:$port"); done
    log "creating the cluster: $((N / 2)) masters, $((N / 2)) replicas"
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes \
      >"$STATE/create.log" 2>&1 \
      || { tail -n 20 "$STATE/create.log" >&2; die "redis-cli --cluster create failed (see ${STATE#"$ROOT"/}/create.log)"; }
  elif (( n_blank > 0 )); then
    die "$n_blank of the $N nodes belong to no cluster and the others do (ports changed?); start afresh with: deploy/redis-cluster.sh reset"
  fi
  wait_healthy
  log "up after $((SECONDS - begun))s"
}

# down: SIGTERM the nodes on PORTS that we started, wait up to 30 s for them all, then SIGKILL. A
# process that exited but was not reaped (a zombie, in a container without an init) counts as
# stopped; lib.sh's stop_pidfile would wait it out. Nodes of another REDIS_CLUSTER_PORTS are left.
down() {
  local file port stopping=() waited=0 others=()
  for port in "${PORTS[@]}"; do
    file="$(pidfile "$port")"
    [[ -e "$file" ]] || continue
    if ours "$port"; then
      stopping+=("$port")
      log "node $port: stopping pid $(<"$file")"
      kill -TERM "$(<"$file")" 2>/dev/null || true
    else
      log "node $port: not running (stale pid file removed)"
      rm -f "$file"
    fi
  done
  shopt -s nullglob
  for file in "$STATE"/*.pid; do
    port="$(basename "$file" .pid)"
    [[ " ${PORTS[*]} " == *" $port "* ]] || ! ours "$port" || others+=("$port")
  done
  (( ${#others[@]} )) && log "left running: nodes ${others[*]}, of another REDIS_CLUSTER_PORTS"
  (( ${#stopping[@]} )) || { log "no node of ours running on ${PORTS[*]}, nothing to stop"; return 0; }
  while (( waited < 300 )); do
    local alive=0
    for port in "${stopping[@]}"; do ours "$port" && alive=1; done
    (( alive )) || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for port in "${stopping[@]}"; do
    if ours "$port"; then
      log "node $port: still running after 30s, sending SIGKILL"
      kill -KILL "$(<"$(pidfile "$port")")" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$port")"
  done
  log "stopped ${#stopping[@]} nodes"
}

status() {
  local port pid repl any=0 answers=0 line
  check_settings
  for port in "${PORTS[@]}"; do
    if ours "$port"; then
      pid="pid $(<"$(pidfile "$port")")"
      any=1
    else
      pid="not ours"
    fi
    if ! node_answers "$port"; then
      echo "$HOST:$port  down"
      continue
    fi
    answers=1
    repl="$(cli "$port" info replication)"
    line="$(cli "$port" cluster nodes | awk '$3 ~ /myself/ { s = ""; for (i = 9; i <= NF; i++) s = s " " $i; print s }')"
    if [[ "$(field role "$repl")" == master ]]; then
      echo "$HOST:$port  $pid  master  slots$line  replicas $(field connected_slaves "$repl")"
    else
      echo "$HOST:$port  $pid  replica of $(field master_port "$repl")  link $(field master_link_status "$repl")"
    fi
  done
  if (( answers )) && healthy; then
    echo "healthy"
    return 0
  fi
  (( any )) && return 1
  return 3
}

case "${1:-}" in
  up) up ;;
  down) check_settings && down ;;
  status) status ;;
  reset)
    check_settings
    down
    for port in "${PORTS[@]}"; do rm -rf "${STATE:?}/$port"; done
    rm -f "$STATE/create.log"
    log "removed the data of nodes ${PORTS[*]} from ${STATE#"$ROOT"/}"
    ;;
  start-node)
    [[ $# == 2 ]] || usage
    check_settings
    [[ " ${PORTS[*]} " == *" $2 "* ]] || die "port $2 is not one of the cluster's (${PORTS[*]})"
    [[ -e "$STATE/$2/nodes.conf" ]] || die "node $2 was never started here (no ${STATE#"$ROOT"/}/$2/nodes.conf): use up"
    if ours "$2"; then
      log "node $2 already running (pid $(<"$(pidfile "$2")"))"
    else
      port_open "$HOST" "$2" && die "port $2 is taken by a process not started by this script"
      begun=$SECONDS
      start_node "$2"
      wait_node "$2"
      wait_healthy
      log "node $2 back after $((SECONDS - begun))s: $(field role "$(cli "$2" info replication)")"
    fi
    ;;
  *) usage ;;
esac
