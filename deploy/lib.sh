# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts
# Shared helpers for deploy/*.sh. Source it, do not run it.
#
# Layout (all inside the repo, both folders git-ignored):
#   .run/    pid files, service data and logs; thrown away by `make clean`
#   .cache/  downloaded jars; kept by `make clean`, fresh in every CI clone

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
CACHE_DIR="$ROOT/.cache"
PROBE=(python3 "$ROOT/deploy/probe.py")

# log MSG...: progress on stderr, prefixed with the calling script's name.
log() { echo "[$(basename "$0" .sh)] $*" >&2; }

# die MSG...: one line on stderr, exit 1.
die() { log "ERROR: $*"; exit 1; }

# need_cmd CMD HOW: fail in one line with the install hint when CMD is missing.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; install it with: $2"
}

# pid_alive PIDFILE [PATTERN]: true when PIDFILE names a running process
# (whose command line contains PATTERN, when given: a pid recycled by an
# unrelated process after a reboot does not count).
pid_alive() {
  local pid cmdline
  [[ -s "$1" ]] && pid="$(<"$1")" && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -z "${2:-}" ]] && return 0
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
  [[ "$cmdline" == *"$2"* ]]
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
  timeout 2 bash -c ": </dev/tcp/$1/$2" 2>/dev/null
}

# wait_until SECONDS WHAT CMD...: run CMD every second until it succeeds.
# Fails after SECONDS, or as soon as the pid file in $WATCH_PIDFILE (when set)
# names a dead process, so a crashed server is reported at once.
wait_until() {
  local limit="$1" what="$2" start=$SECONDS
  shift 2
  until "$@" 2>/dev/null; do
    if [[ -n "${WATCH_PIDFILE:-}" ]] && ! pid_alive "$WATCH_PIDFILE"; then
      log "$what: the process died while starting"
      return 1
    fi
    if (( SECONDS - start >= limit )); then
      log "$what: not ready after ${limit}s"
      "$@" || true  # show why, once
      return 1
    fi
    sleep 1
  done
  log "$what: ready after $((SECONDS - start))s"
}

# stop_pidfile NAME PIDFILE PATTERN [GRACE_SECONDS]: SIGTERM the recorded
# process, wait up to GRACE_SECONDS (default 30), then SIGKILL; remove the
# pid file. Touches only the process recorded in PIDFILE, and only while its
# command line still contains PATTERN, i.e. one we started.
stop_pidfile() {
  local name="$1" pidfile="$2" pattern="$3" grace="${4:-30}" pid waited=0
  if [[ ! -e "$pidfile" ]]; then
    log "$name: not started by us (no ${pidfile#"$ROOT"/}), nothing to stop"
    return 0
  fi
  if ! pid_alive "$pidfile" "$pattern"; then
    log "$name: not running (stale pid file removed)"
    rm -f "$pidfile"
    return 0
  fi
  pid="$(<"$pidfile")"
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && (( waited < grace * 10 )); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# apt_install LOG PACKAGE...: install Debian packages without letting their
# postinst start a packaged service (policy-rc.d 101 = "do not start", as in
# containers); the apt output goes to LOG, its tail to stderr on failure.
# Installs from several deploy scripts running at once (make up) take turns
# on a lock: dpkg allows one at a time.
apt_install() {
  local apt_log="$1"
  shift
  need_cmd apt-get "$* with your system's package manager"
  (( EUID == 0 )) || die "$* missing; install with: sudo apt-get install -y $*"
  mkdir -p "$RUN_DIR" "$(dirname "$apt_log")"
  log "installing $*: apt-get update && apt-get install $*"
  local status=0
  (
    flock 9
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also when interrupted
    fi
    # dpkg's own lock may be held by an apt run outside the project: wait for it rather than fail.
    {
      apt-get -o DPkg::Lock::Timeout=300 update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"
    } >"$apt_log" 2>&1
  ) 9>"$RUN_DIR/apt.lock" || status=$?
  (( status == 0 )) || { tail -n 20 "$apt_log" >&2; die "apt-get install $* failed"; }
}
