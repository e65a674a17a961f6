#!/usr/bin/env bash
# The live demo (`make demo`): Kafka, Redis, one worker and the simulator, with
# an incident a few minutes in, watched live in the terminal, and Prometheus
# (http://127.0.0.1:9090/classic/alerts) with Alertmanager (127.0.0.1:9095, no web UI in Debian's package:
# `amtool --alertmanager.url=http://127.0.0.1:9095 alert query`; Kafka's controller has 9093)
# evaluating sla-stream's rules on the worker's metrics. Ctrl-C stops it all.
# Time is accelerated: two hours of traffic for three apps are replayed 30
# times faster than real time, ending at the present, so slots close every 10
# seconds and the incident (app 1400000002, 25 minutes at 80% success, 40
# minutes into the period) shows after about 80 seconds; its five or six bad
# slots spend half the month's budget or more, and SlaBudgetHalfUsed fires.
#
#   deploy/demo.sh                 run until Ctrl-C
#   DEMO_SECONDS=150 deploy/demo.sh  stop by itself after 150 s (for unattended runs)
#
# Each run uses its own topics, consumer group and Redis keys (demo-<time>),
# written to .run/demo/config.toml over the customer terms of config/demo.toml.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SLA="$ROOT/.venv/bin/sla-stream"
DEMO_DIR="$RUN_DIR/demo"
TAG="demo-$(date +%Y%m%d%H%M%S)"
CONFIG="$DEMO_DIR/config.toml"
mkdir -p "$DEMO_DIR"

# Services that were up before the demo (a `make up`, a test run) are left running.
started_here=()
"${PROBE[@]}" kafka "${KAFKA_BOOTSTRAP:-127.0.0.1:9092}" 2>/dev/null || started_here+=(kafka)
"${PROBE[@]}" redis "${REDIS_URL:-redis://127.0.0.1:6379/0}" 2>/dev/null || started_here+=(redis)

pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if (( ${#started_here[@]} )); then
    bash "$ROOT/deploy/stop.sh" "${started_here[@]}" >/dev/null 2>&1 || true
  fi
  log "stopped; logs in ${DEMO_DIR#"$ROOT"/}/"
}
# Ctrl-C is how a demo ends: a clean exit, not `make: *** [demo] Error 130`.
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

{
  cat "$ROOT/config/demo.toml"
  printf '\n[stream]\ngroup = "%s"\n\n[redis]\nkey_prefix = "%s:"\n\n[kafka.topics]\n' "$TAG" "$TAG"
  for name in requests successes exemptions verdicts dead_letter; do
    printf '%s = "%s.%s"\n' "$name" "$TAG" "$name"
  done
} >"$CONFIG"

bash "$ROOT/deploy/up.sh"
for port in 9090 9095 9464; do
  port_open 127.0.0.1 "$port" && die "port $port is taken (Prometheus, Alertmanager or a worker's metrics): free it first"
done
"$SLA" topics --config "$CONFIG" >"$DEMO_DIR/topics.log"
"$SLA" worker --config "$CONFIG" >"$DEMO_DIR/worker.log" 2>&1 &
pids+=($!)
prometheus-alertmanager --config.file="$ROOT/deploy/prometheus/alertmanager-demo.yml" \
  --storage.path="$DEMO_DIR/alertmanager" --web.listen-address=127.0.0.1:9095 --cluster.listen-address= \
  >"$DEMO_DIR/alertmanager.log" 2>&1 &
pids+=($!)
prometheus --config.file="$ROOT/deploy/prometheus/demo.yml" --storage.tsdb.path="$DEMO_DIR/prometheus" \
  --web.listen-address=127.0.0.1:9090 >"$DEMO_DIR/prometheus.log" 2>&1 &
pids+=($!)
"$SLA" simulate --kafka --config "$CONFIG" --apps 3 --duration 2h --speed 30 --batch 20 \
  --peak-per-minute 120 --seed 7 --incident "+40m,25m,0.8,1400000002" >"$DEMO_DIR/simulate.log" 2>&1 &
pids+=($!)
log "month pages: http://127.0.0.1:9464/; metrics: http://127.0.0.1:9464/metrics; alerts: http://127.0.0.1:9090/classic/alerts (Prometheus), \`amtool --alertmanager.url=http://127.0.0.1:9095 alert query\` (Alertmanager)"

if [[ -n "${DEMO_SECONDS:-}" ]]; then
  timeout --foreground "$DEMO_SECONDS" "$SLA" watch --config "$CONFIG" || true
else
  "$SLA" watch --config "$CONFIG"
fi
