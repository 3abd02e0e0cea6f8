#!/usr/bin/env bash
# Make sure the tools tests/deploy needs are on this machine; idempotent and quick when
# they are: sshd + ssh/scp/ssh-keygen (openssh-server, openssh-client) and
# systemd-analyze/systemctl (systemd; used offline, systemd need not be running).
# Installs with apt-get as root (Debian/Ubuntu). Touches no ssh configuration and
# starts no service; it only creates /run/sshd, the privilege separation directory
# every sshd needs.
set -euo pipefail

say() { echo "ensure-test-tools: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing_packages() {
    command -v /usr/sbin/sshd >/dev/null || echo openssh-server
    { command -v ssh && command -v scp && command -v ssh-keygen; } >/dev/null || echo openssh-client
    { command -v systemd-analyze && command -v systemctl; } >/dev/null || echo systemd
}

install_packages() {
    [ "$(id -u)" = 0 ] || { say "run as root to install: $*"; exit 1; }
    say "installing $*"
    apt_install "$@"
}

main() {
    local -a packages
    mapfile -t packages < <(missing_packages)
    if [ ${#packages[@]} -gt 0 ]; then install_packages "${packages[@]}"; fi
    mkdir -p /run/sshd && chmod 0755 /run/sshd
}

main "$@"
