#!/usr/bin/env bash
# Install the LMStack agent on GPU hosts over SSH (what `make deploy` runs).
#
#   scripts/deploy.sh --controller HOST:50051 [--wheel FILE] HOST... [-- INSTALL.SH ARGS...]
#
# Builds the wheel once (unless --wheel is given), then for each host in turn: copies the
# wheel, deploy/install.sh and deploy/systemd/ into a temporary directory over scp, runs
# install.sh there as root (via `sudo -n` when the SSH user is not root) with the join
# token on standard input, removes the directory, and records OK or FAILED. A summary
# follows; the exit status is 1 when any host failed.
#
# HOST is an ssh destination (gpu1, root@gpu1, admin@10.0.0.21); the worker is named
# after it without the user part. Arguments after `--` go to install.sh on every host
# (e.g. --set LMSTACK_LOG_LEVEL=DEBUG, --pip-args "...", --no-start).
#
# Environment:
#   LMSTACK_DEPLOY_TOKEN   the agents' join token (or --token-file FILE)
#   SSH_OPTS               options for both ssh and scp, word-split: -i KEY, -o Port=2222, ...
#   PYTHON                 interpreter with pip that builds the wheel (default python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
PYTHON="${PYTHON:-python3}"
CONTROLLER=""
WHEEL=""
TOKEN="${LMSTACK_DEPLOY_TOKEN:-}"
HOSTS=()
INSTALL_ARGS=()
WORK=""

say() { printf 'deploy: %s\n' "$*"; }
die() { printf 'deploy: error: %s\n' "$*" >&2; exit 2; }

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --controller) CONTROLLER="${2?--controller needs HOST:PORT}"; shift ;;
            --wheel) WHEEL="${2:?--wheel needs a file}"; shift ;;
            --token-file) TOKEN="$(head -n1 "${2:?--token-file needs a file}")"; shift ;;
            --) shift; INSTALL_ARGS=("$@"); break ;;
            -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1 (see --help)" ;;
            *) HOSTS+=("$1") ;;
        esac
        shift
    done
    [ ${#HOSTS[@]} -gt 0 ] || die 'no hosts: make deploy HOSTS="gpu1 gpu2" CONTROLLER=host:50051 TOKEN=...'
    [ -n "$CONTROLLER" ] || die "no controller address: CONTROLLER=host:50051"
    [ -n "$TOKEN" ] || die "no join token: TOKEN=... (the controller's <data-dir>/agent_token)"
}

build_wheel() {
    if [ -n "$WHEEL" ]; then
        [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
        return 0
    fi
    say "building the wheel"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$REPO" >/dev/null
    WHEEL="$(find "$WORK/dist" -name 'lmstack-*.whl' -print -quit)"
    [ -n "$WHEEL" ] || die "the wheel build produced no lmstack-*.whl"
    say "built $(basename "$WHEEL")"
}

# ssh/scp with the operator's options; SSH_OPTS is word-split on purpose.
remote() {
    # shellcheck disable=SC2086
    ssh $SSH_OPTS -o BatchMode=yes "$@"
}

copy() {
    # shellcheck disable=SC2086
    scp $SSH_OPTS -o BatchMode=yes -q -r "$@"
}

install_command() {
    local dir="$1" host="$2" cmd arg
    cmd="bash $dir/install.sh --wheel $dir/$(basename "$WHEEL")"
    cmd+=" --controller $(printf '%q' "$CONTROLLER") --token-stdin --name $(printf '%q' "${host#*@}")"
    for arg in "${INSTALL_ARGS[@]}"; do cmd+=" $(printf '%q' "$arg")"; done
    # Root or passwordless sudo; the directory goes either way. Expanded remotely:
    # shellcheck disable=SC2016
    printf 'if [ "$(id -u)" = 0 ]; then %s; else sudo -n %s; fi; rc=$?; rm -rf %s; exit $rc' \
        "$cmd" "$cmd" "$dir"
}

deploy_host() {
    local host="$1" dir
    dir="$(remote "$host" 'mktemp -d /tmp/lmstack-deploy.XXXXXX' </dev/null)" || return 1
    say "$host: copying the wheel and install.sh to $dir"
    copy "$WHEEL" "$REPO/deploy/install.sh" "$REPO/deploy/systemd" "$host:$dir/" || return 1
    remote "$host" "$(install_command "$dir" "$host")" <<<"$TOKEN" 2>&1 |
        sed "s/^/[$host] /"
    return "${PIPESTATUS[0]}"
}

main() {
    parse_args "$@"
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    build_wheel
    local host failed=0
    local -a report=()
    for host in "${HOSTS[@]}"; do
        say "$host: installing the agent"
        if deploy_host "$host"; then
            report+=("$host: OK")
        else
            report+=("$host: FAILED")
            failed=1
        fi
    done
    say "summary:"
    printf '  %s\n' "${report[@]}"
    return "$failed"
}

main "$@"
