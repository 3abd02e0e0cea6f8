#!/usr/bin/env bash
# Make sure the tools tests/deploy needs are on this machine; idempotent and quick when
# they are: sshd + ssh/scp/ssh-keygen (openssh-server, openssh-client) and
# systemd-analyze/systemctl (systemd; used offline, systemd need not be running).
# Installs with apt-get as root (Debian/Ubuntu). Touches no ssh configuration and
# starts no service; it only creates /run/sshd, the privilege separation directory
# every sshd needs.
set -euo pipefail

say() { echo "ensure-test-tools: $*" >&2; }

missing_packages() {
    command -v /usr/sbin/sshd >/dev/null || echo openssh-server
    { command -v ssh && command -v scp && command -v ssh-keygen; } >/dev/null || echo openssh-client
    { command -v systemd-analyze && command -v systemctl; } >/dev/null || echo systemd
}

apt_install() {
    [ "$(id -u)" = 0 ] || { say "run as root to install: $*"; exit 1; }
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "$@" >/dev/null
    }
}

main() {
    local -a packages
    mapfile -t packages < <(missing_packages)
    if [ ${#packages[@]} -gt 0 ]; then apt_install "${packages[@]}"; fi
    mkdir -p /run/sshd && chmod 0755 /run/sshd
}

main "$@"
