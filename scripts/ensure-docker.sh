#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; idempotent.
#
#   1. `docker info` works already        -> exit 0, nothing touched.
#   2. `dockerd` missing                  -> apt-get install docker.io (Debian's engine).
#   3. start dockerd in the background (setsid + nohup, log in $LMSTACK_DOCKERD_LOG,
#      pid in $LMSTACK_DOCKERD_PIDFILE) and wait up to $LMSTACK_DOCKERD_WAIT seconds for
#      /_ping on the socket; fail with the log tail if it never answers.
#
# For machines without systemd (CI containers, sandboxes). Never passes --bridge=none: on a
# host whose engine runs already that would delete docker0. Published ports
# (-p 127.0.0.1:H:C) must work; if the iptables setup fails (no nf_tables / no
# CAP_NET_ADMIN), dockerd is restarted once with --iptables=false, where the userland proxy
# (docker-proxy, on by default) still forwards published host ports.
#
# Env: LMSTACK_DOCKERD_FLAGS   extra dockerd flags (word-split)
#      LMSTACK_DOCKERD_LOG     default /tmp/lmstack-dockerd.log
#      LMSTACK_DOCKERD_PIDFILE default /var/run/lmstack-dockerd.pid
#      LMSTACK_DOCKERD_WAIT    default 60 (seconds)
set -euo pipefail

LOG="${LMSTACK_DOCKERD_LOG:-/tmp/lmstack-dockerd.log}"
PIDFILE="${LMSTACK_DOCKERD_PIDFILE:-/var/run/lmstack-dockerd.pid}"
WAIT="${LMSTACK_DOCKERD_WAIT:-60}"
SOCK=/var/run/docker.sock

say() { echo "ensure-docker: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "must run as root (or with sudo available)"; exit 1; }
    SUDO="sudo"
fi

engine_answers() {
    # The socket answers /_ping before `docker info` is meaningful; check both.
    curl -fsS -m 3 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1 &&
        docker info >/dev/null 2>&1
}

if docker info >/dev/null 2>&1; then
    exit 0
fi

if ! command -v dockerd >/dev/null; then
    say "dockerd not found; installing Debian's docker.io"
    apt_install docker.io
    command -v dockerd >/dev/null || { say "docker.io installed but dockerd not on PATH"; exit 1; }
fi
command -v curl >/dev/null || apt_install curl

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# The dockerd being waited for (empty until its pidfile is written).
WATCH_PID=""

start_dockerd() {
    # A stale pidfile would make wait_for_engine think the new daemon died at once.
    $SUDO rm -f "$PIDFILE"
    WATCH_PID=""
    say "starting dockerd${*:+ $*}${LMSTACK_DOCKERD_FLAGS:+ $LMSTACK_DOCKERD_FLAGS} (log: $LOG)"
    # setsid: the daemon must outlive the caller's session (pytest, make, CI step); all three
    # standard streams are redirected so a caller that captures output is not held open.
    # shellcheck disable=SC2086  # LMSTACK_DOCKERD_FLAGS is a list of flags on purpose.
    $SUDO setsid nohup dockerd --pidfile "$PIDFILE" "$@" ${LMSTACK_DOCKERD_FLAGS:-} \
        </dev/null >>"$LOG" 2>&1 &
}

# Returns 0 when the engine answers, 1 when dockerd died, 2 on timeout.
wait_for_engine() {
    local deadline=$((SECONDS + WAIT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if engine_answers; then
            return 0
        fi
        [ -n "$WATCH_PID" ] || WATCH_PID="$(cat "$PIDFILE" 2>/dev/null || true)"
        if [ -n "$WATCH_PID" ] && ! pid_alive "$WATCH_PID"; then
            return 1
        fi
        sleep 0.5
    done
    return 2
}

: >>"$LOG"
log_start=$(wc -l <"$LOG")
running_pid="$(pidof dockerd 2>/dev/null || true)"
if [ -n "$running_pid" ]; then
    # Never a second daemon: one is coming up already (an earlier run of this script, or
    # the package's init script right after install). Wait for it instead.
    WATCH_PID="${running_pid%% *}"
    say "dockerd (pid $WATCH_PID) is running but not answering yet; waiting"
else
    start_dockerd
fi

rc=0
wait_for_engine || rc=$?
if [ "$rc" = 1 ] && tail -n +"$((log_start + 1))" "$LOG" | grep -qi 'iptables'; then
    say "dockerd failed to set up iptables; retrying with --iptables=false (userland proxy)"
    start_dockerd --iptables=false
    rc=0
    wait_for_engine || rc=$?
fi

if [ "$rc" != 0 ]; then
    if [ "$rc" = 1 ]; then
        say "dockerd exited during start-up"
    else
        say "dockerd did not answer on $SOCK within ${WAIT}s"
    fi
    say "last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
fi
say "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) is up"
