#!/usr/bin/env bash
# Make sure the Debian packages the tests use are installed, each only when
# missing, all in one apt-get run (dpkg takes one install at a time):
#   - prometheus 2.42 (with promtool) and prometheus-alertmanager 0.25: the
#     alert tests and `make demo` run their own instances of them;
#   - chromium (/usr/bin/chromium) and a font for it: the browser test of the
#     HTML month page drives it headless with Playwright
#     (tests/integration/test_month_page_browser.py); Playwright's own browser
#     download is never used.
#
#   deploy/packages.sh
#
# Nothing is started here (the packages' own services stay off): the test
# suite starts its own Prometheus and Alertmanager on free loopback ports, and
# `make demo` starts them with deploy/prometheus/demo.yml. `make up` runs this
# script beside Kafka and Redis (deploy/up.sh). The apt output goes to
# .run/packages/apt.log.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=/usr/bin/chromium

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[[ -x "$CHROMIUM" ]] || missing+=(chromium)
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if (( ${#missing[@]} )); then
  apt_install "$RUN_DIR/packages/apt.log" "${missing[@]}"
fi
log "$(prometheus --version 2>&1 | head -n 1); $(prometheus-alertmanager --version 2>&1 | head -n 1)"
log "$("$CHROMIUM" --version 2>/dev/null | head -n 1)"  # its launcher script warns on stderr
