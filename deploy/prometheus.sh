#!/usr/bin/env bash
# Make sure Prometheus (with promtool) and Alertmanager are installed: Debian's
# prometheus 2.42 and prometheus-alertmanager 0.25, installed when missing.
#
#   deploy/prometheus.sh
#
# Nothing is started here (the packages' own services stay off): the test
# suite starts its own Prometheus and Alertmanager on free loopback ports, and
# `make demo` starts them with deploy/prometheus/demo.yml.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if (( ${#missing[@]} )); then
  apt_install "$RUN_DIR/prometheus/apt.log" "${missing[@]}"
fi
log "$(prometheus --version 2>&1 | head -n 1); $(prometheus-alertmanager --version 2>&1 | head -n 1)"
