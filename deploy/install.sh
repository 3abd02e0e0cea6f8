#!/usr/bin/env bash
# Install, upgrade or remove an LMStack daemon on this host (Debian/Ubuntu, as root).
#
#   install.sh --wheel lmstack-*.whl --controller HOST:50051 --token-stdin [--name gpu-01] <<<"$TOKEN"
#   install.sh --role controller --wheel lmstack-*.whl [--set LMSTACK_HOST=0.0.0.0]
#   install.sh --uninstall [--role agent|controller] [--purge]
#
# What it does (each step is printed; running it again changes only what differs):
#   1. the system user `lmstack` (home /var/lib/lmstack; the agent's also in group `docker`)
#   2. a virtualenv in /opt/lmstack with the wheel installed (bin/lmstack-agent, ...)
#   3. /etc/lmstack/<role>.env, mode 0600: settings given here replace their old values,
#      every other line (your own LMSTACK_* settings) is kept
#   4. /etc/systemd/system/lmstack-<role>.service, enabled; (re)started when systemd runs
#
# --uninstall stops, disables and removes the unit, and the virtualenv once no LMStack
# unit is left; the env file and /var/lib/lmstack/<role> stay unless --purge is given.
#
# Options:
#   --role agent|controller   which daemon (default agent)
#   --wheel FILE              the lmstack wheel to install (make deploy builds one)
#   --controller HOST:PORT    agent: the controller's gRPC address (LMSTACK_CONTROLLER)
#   --token TOKEN             agent: join token (LMSTACK_TOKEN); visible in `ps`, so prefer
#   --token-stdin             ... reading it from the first line of standard input, or
#   --token-file FILE         ... from a file
#   --name NAME               agent: worker name (LMSTACK_NAME; default: the hostname)
#   --set KEY=VALUE           any other setting for the env file (repeatable)
#   --python PYTHON           interpreter for the virtualenv (default python3, >= 3.11)
#   --pip-args "ARGS"         extra pip arguments, e.g. "--no-index --find-links /srv/wheels"
#   --no-start                install and enable, but do not (re)start the service
#   --root DIR                install under DIR instead of / (images, tests): every path is
#                             prefixed, no user is created and systemd is not contacted
#   --uninstall [--purge]     remove (see above)
#
# Environment: LMSTACK_INSTALL_ROOT is the default of --root.
set -euo pipefail

readonly PROG="lmstack-install"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly SERVICE_USER="lmstack"

ROLE="agent"
WHEEL=""
PYTHON="python3"
PIP_ARGS=""
ROOT="${LMSTACK_INSTALL_ROOT:-/}"
START=1
UNINSTALL=0
PURGE=0
TOKEN=""
SETTINGS=()

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --role) ROLE="${2:?--role needs a value}"; shift ;;
            --wheel) WHEEL="${2:?--wheel needs a file}"; shift ;;
            --controller) SETTINGS+=("LMSTACK_CONTROLLER=${2:?--controller needs HOST:PORT}"); shift ;;
            --token) TOKEN="${2:?--token needs a value}"; shift ;;
            --token-stdin) IFS= read -r TOKEN || true ;;
            --token-file) TOKEN="$(head -n1 "${2:?--token-file needs a file}")"; shift ;;
            --name) SETTINGS+=("LMSTACK_NAME=${2:?--name needs a value}"); shift ;;
            --set) SETTINGS+=("${2:?--set needs KEY=VALUE}"); shift ;;
            --python) PYTHON="${2:?--python needs a value}"; shift ;;
            --pip-args) PIP_ARGS="${2?--pip-args needs a value}"; shift ;;
            --no-start) START=0 ;;
            --root) ROOT="${2:?--root needs a directory}"; shift ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            -h | --help) usage ;;
            *) printf '%s: unknown argument %q\n' "$PROG" "$1" >&2; usage ;;
        esac
        shift
    done
    case "$ROLE" in agent | controller) ;; *) die "--role must be agent or controller" ;; esac
    if [ -n "$TOKEN" ]; then SETTINGS+=("LMSTACK_TOKEN=$TOKEN"); fi
    ROOT="$(realpath -m "$ROOT")"
}

# ------------------------------------------------------------------ paths

prefix() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

set_paths() {
    UNIT_NAME="lmstack-$ROLE.service"
    VENV="$(prefix /opt/lmstack)"
    CONF_DIR="$(prefix /etc/lmstack)"
    ENV_FILE="$CONF_DIR/$ROLE.env"
    UNIT_DIR="$(prefix /etc/systemd/system)"
    STATE_DIR="$(prefix /var/lib/lmstack)"
}

on_real_root() { [ "$ROOT" = / ]; }
systemd_running() { on_real_root && [ -d /run/systemd/system ]; }

# ------------------------------------------------------------------ checks

check_privileges() {
    if on_real_root && [ "$(id -u)" != 0 ]; then
        die "run as root (or with --root DIR for a staging tree)"
    fi
}

check_setting() {
    local pair="$1"
    [[ "$pair" =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || die "setting '${pair%%=*}': expected KEY=VALUE"
    # systemd reads quotes and backslashes in env files; keep values literal.
    [[ "$pair" != *[[:space:]\"\'\\]* ]] || die "setting '${pair%%=*}': quotes, spaces and backslashes are not supported"
}

check_agent_settings() {
    [ "$ROLE" = agent ] || return 0
    local key
    for key in LMSTACK_CONTROLLER LMSTACK_TOKEN; do
        has_setting "$key" || env_file_has "$key" ||
            die "the agent needs $key: pass --controller HOST:PORT and --token-stdin/--token-file"
    done
}

has_setting() {
    local pair
    for pair in "${SETTINGS[@]}"; do [ "${pair%%=*}" = "$1" ] && return 0; done
    return 1
}

env_file_has() { [ -f "$ENV_FILE" ] && grep -q "^$1=." "$ENV_FILE"; }

# ------------------------------------------------------------------ steps

ensure_python() {
    if "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        return 0
    fi
    if on_real_root && command -v apt-get >/dev/null; then
        say "installing python3 and python3-venv with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >/dev/null
    fi
    "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "$PYTHON with the venv module, version 3.11 or newer, is needed (--python PYTHON)"
}

ensure_user() {
    if ! on_real_root; then
        say "skipped: system user $SERVICE_USER (--root given)"
        return 0
    fi
    if ! getent group docker >/dev/null && [ "$ROLE" = agent ]; then
        groupadd --system docker
        say "created group docker (Docker's packages use it; install Docker next)"
    fi
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/lmstack --no-create-home \
            --shell /usr/sbin/nologin --comment "LMStack daemons" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
    if [ "$ROLE" = agent ] && ! id -nG "$SERVICE_USER" | grep -qw docker; then
        usermod --append --groups docker "$SERVICE_USER"
        say "added $SERVICE_USER to group docker (root-equivalent on this host)"
    fi
}

ensure_dirs() {
    install -d -m 0755 "$CONF_DIR" "$UNIT_DIR"
    install -d -m 0750 "$STATE_DIR"
    if on_real_root && id "$SERVICE_USER" >/dev/null 2>&1; then
        chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
    fi
}

install_venv() {
    [ -n "$WHEEL" ] || die "--wheel FILE is required"
    [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
        say "created virtualenv $VENV"
    fi
    local -a pip_args
    read -r -a pip_args <<<"$PIP_ARGS"
    # First the wheel with its dependencies, then this exact build over it: a rebuilt
    # wheel of the same version must still replace the installed code.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" "$WHEEL"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --force-reinstall "${pip_args[@]}" "$WHEEL"
    "$VENV/bin/lmstack-$ROLE" --help >/dev/null || die "$VENV/bin/lmstack-$ROLE does not run"
    say "installed $(basename "$WHEEL") into $VENV"
}

env_header() {
    cat <<EOF
# LMStack $ROLE settings, read by $UNIT_NAME (EnvironmentFile=).
# One LMSTACK_* variable a line; see the README's Configuration section.
# install.sh replaces the settings it is given and keeps every other line.
EOF
}

write_env_file() {
    local pair pattern="^(" sep=""
    for pair in "${SETTINGS[@]}"; do pattern+="$sep${pair%%=*}"; sep="|"; done
    pattern+=")="
    local tmp
    tmp="$(mktemp "$ENV_FILE.XXXXXX")"
    chmod 0600 "$tmp"
    {
        if [ -f "$ENV_FILE" ]; then grep -Ev "$pattern" "$ENV_FILE" || true; else env_header; fi
        for pair in "${SETTINGS[@]}"; do printf '%s\n' "$pair"; done
    } >"$tmp"
    replace_file "$tmp" "$ENV_FILE" "env file (mode 0600)"
}

install_unit() {
    local src="$HERE/systemd/$UNIT_NAME"
    [ -f "$src" ] || die "missing $src (keep install.sh next to its systemd/ directory)"
    local tmp
    tmp="$(mktemp "$UNIT_DIR/.$UNIT_NAME.XXXXXX")"
    cat "$src" >"$tmp"
    chmod 0644 "$tmp"
    replace_file "$tmp" "$UNIT_DIR/$UNIT_NAME" "unit"
}

# Move $1 over $2 unless the content is the same; say which.
replace_file() {
    local tmp="$1" dest="$2" what="$3"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        say "unchanged: $what $dest"
    else
        mv -f "$tmp" "$dest"
        say "wrote $what $dest"
    fi
}

enable_unit() {
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable --quiet "$UNIT_NAME"
    else
        # Offline: systemctl only creates the [Install] symlinks under the root.
        systemctl --root="$ROOT" enable --quiet "$UNIT_NAME" 2>/dev/null ||
            die "systemctl --root=$ROOT enable $UNIT_NAME failed"
    fi
    say "enabled $UNIT_NAME"
}

start_unit() {
    if [ "$START" = 0 ]; then
        say "not started (--no-start): systemctl restart $UNIT_NAME"
    elif ! systemd_running; then
        say "skipped: starting $UNIT_NAME (systemd is not running here, or --root given)"
    else
        systemctl restart "$UNIT_NAME"
        say "(re)started $UNIT_NAME; logs: journalctl -u $UNIT_NAME -f"
    fi
}

# ------------------------------------------------------------------ uninstall

remove_unit() {
    local unit_file="$UNIT_DIR/$UNIT_NAME"
    if [ ! -f "$unit_file" ]; then
        say "not installed: $unit_file"
        return 0
    fi
    if systemd_running; then
        systemctl disable --now --quiet "$UNIT_NAME" || true
        say "stopped and disabled $UNIT_NAME"
    else
        systemctl --root="$ROOT" disable --quiet "$UNIT_NAME" 2>/dev/null || true
        say "disabled $UNIT_NAME"
    fi
    rm -f "$unit_file"
    if systemd_running; then systemctl daemon-reload; fi
    say "removed $unit_file"
}

other_units_left() { compgen -G "$UNIT_DIR/lmstack-*.service" >/dev/null; }

remove_files() {
    if other_units_left; then
        say "kept $VENV (another LMStack unit still uses it)"
    elif [ -d "$VENV" ]; then
        rm -rf "$VENV"
        say "removed $VENV"
    fi
    if [ "$PURGE" = 0 ]; then
        say "kept $ENV_FILE and $STATE_DIR/$ROLE (add --purge to remove them)"
        return 0
    fi
    rm -rf "$ENV_FILE" "${STATE_DIR:?}/${ROLE:?}"
    say "removed $ENV_FILE and $STATE_DIR/$ROLE"
    rmdir "$CONF_DIR" "$STATE_DIR" 2>/dev/null || true
}

# ------------------------------------------------------------------ main

install_all() {
    local pair
    for pair in "${SETTINGS[@]}"; do check_setting "$pair"; done
    check_agent_settings
    ensure_python
    ensure_user
    ensure_dirs
    install_venv
    write_env_file
    install_unit
    enable_unit
    start_unit
    say "done: $ROLE installed under $ROOT"
}

uninstall_all() {
    remove_unit
    remove_files
    say "done: $ROLE uninstalled from $ROOT"
}

main() {
    parse_args "$@"
    set_paths
    check_privileges
    if [ "$UNINSTALL" = 1 ]; then uninstall_all; else install_all; fi
}

main "$@"
