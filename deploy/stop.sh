#!/usr/bin/env bash
# Stop the Kafka broker and Redis server that deploy/ started (`make down`).
#
#   deploy/stop.sh               stop both
#   deploy/stop.sh kafka|redis   stop one
#
# Only the processes recorded in .run/kafka.pid and .run/redis.pid are
# signalled (SIGTERM, then SIGKILL after a bounded wait); services that were
# already running, or given by KAFKA_BOOTSTRAP / REDIS_URL, are left alone.
set -euo pipefail
deploy="$(dirname "${BASH_SOURCE[0]}")"

services=("$@")
(( ${#services[@]} )) || services=(kafka redis)
for service in "${services[@]}"; do
  case "$service" in
    kafka|redis) bash "$deploy/$service.sh" stop ;;
    *) echo "usage: deploy/stop.sh [kafka|redis]..." >&2; exit 2 ;;
  esac
done
