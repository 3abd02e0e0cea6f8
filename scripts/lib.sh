# Shared by the ensure-*.sh scripts, which source it after defining `say MESSAGE`
# (their prefixed line on stderr). Not run on its own.

# apt_install PKG...: Debian packages without recommends, quiet when it works. The
# package lists are refreshed only when a first try fails (lists stale or absent, as
# in a fresh container); on failure the last 30 lines of apt's output go to stderr
# and the script exits 1. Needs root, or SUDO=sudo.
apt_install() {
    local out
    out="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # SUDO is empty or one word on purpose.
    if ! { ${SUDO:-} apt-get install -y -qq --no-install-recommends "$@" ||
        { ${SUDO:-} apt-get update -qq &&
            ${SUDO:-} apt-get install -y -qq --no-install-recommends "$@"; }; } >"$out" 2>&1; then
        say "apt-get install $* failed:"
        tail -n 30 "$out" >&2
        rm -f "$out"
        exit 1
    fi
    rm -f "$out"
}
