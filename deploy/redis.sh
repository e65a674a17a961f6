#!/usr/bin/env bash
# Start a Redis server on 127.0.0.1:6379 and wait until it answers PING.
# Idempotent, no prompts. It persists with the append-only file, fsynced
# before each reply (appendfsync always): a crash or a restart loses no
# write the stream was told had happened (docs/reliability.md, "Your own Redis").
#
#   deploy/redis.sh              start (or reuse) and wait until ready;
#                                installs Debian's redis-server when missing
#   REDIS_URL=redis://h:p/0 deploy/redis.sh   start nothing, only check the URL
#   deploy/redis.sh stop         stop the server this script started
#
# Data, log and pid: .run/redis/, .run/redis/redis.log, .run/redis.pid.
# Env: REDIS_WAIT_S (default 30) bounds the wait.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT=6379
URL="redis://$HOST:$PORT/0"
STATE="$RUN_DIR/redis"
PIDFILE="$RUN_DIR/redis.pid"
WAIT_S="${REDIS_WAIT_S:-30}"

if [[ "${1:-}" == stop ]]; then
  stop_pidfile redis "$PIDFILE" redis-server
  exit 0
fi

# An external server: only check it.
if [[ -n "${REDIS_URL:-}" ]]; then
  log "REDIS_URL set, not starting a server"
  wait_until "$WAIT_S" "redis at $REDIS_URL" "${PROBE[@]}" redis "$REDIS_URL"
  exit
fi

# ours_or_other_answers: true (and says so) when a Redis already answers.
ours_or_other_answers() {
  "${PROBE[@]}" redis "$URL" 2>/dev/null || return 1
  if pid_alive "$PIDFILE" redis-server; then
    log "already running (pid $(<"$PIDFILE")) on $HOST:$PORT"
  else
    log "a Redis not started by us already answers on $HOST:$PORT, using it"
  fi
}

ours_or_other_answers && exit 0
port_open "$HOST" "$PORT" \
  && die "port $PORT is taken by something that does not answer as Redis; free it or set REDIS_URL"

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install "$STATE/apt.log" redis-server
  ours_or_other_answers && exit 0  # in case the package started its service
fi

mkdir -p "$STATE"
log "starting $(redis-server --version | cut -d' ' -f1-3) on $HOST:$PORT"
rm -f "$PIDFILE"
redis-server --daemonize yes --bind "$HOST" --port "$PORT" \
  --pidfile "$PIDFILE" --dir "$STATE" --logfile "$STATE/redis.log" \
  --save "" --appendonly yes --appendfsync always \
  || die "redis-server did not start (see ${STATE#"$ROOT"/}/redis.log)"
if ! wait_until "$WAIT_S" "redis on $HOST:$PORT" "${PROBE[@]}" redis "$URL"; then
  tail -n 20 "$STATE/redis.log" >&2 || true
  die "Redis did not come up (see ${STATE#"$ROOT"/}/redis.log)"
fi
