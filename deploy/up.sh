#!/usr/bin/env bash
# Start Kafka and Redis side by side and wait for both (`make up`); install
# the Debian packages the tests use meanwhile (deploy/packages.sh: Prometheus
# and Alertmanager, of which the tests start their own instances, and Chromium
# for the browser test of the HTML month page).
#
#   deploy/up.sh
#
# KAFKA_BOOTSTRAP / REDIS_URL, when set, point at existing services instead
# (see deploy/kafka.sh and deploy/redis.sh). Exit status is non-zero when
# either one failed; the one that came up is left running (`make down`).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$SECONDS
bash "$ROOT/deploy/kafka.sh" &
kafka_job=$!
bash "$ROOT/deploy/redis.sh" &
redis_job=$!
bash "$ROOT/deploy/packages.sh" &
packages_job=$!

status=0
wait "$kafka_job" || status=1
wait "$redis_job" || status=1
wait "$packages_job" || status=1
(( status == 0 )) || die "not all services came up (see the messages above)"
log "Kafka and Redis up, Prometheus, Alertmanager and Chromium installed, after $((SECONDS - started))s"
