#!/usr/bin/env bash
# A headless browser for the web dashboard's end-to-end tests.
#
#   ensure-browser.sh
#
# Debian's chromium (plus one font, so pages render text), installed with apt when
# /usr/bin/chromium is missing. Playwright's own browser download is not used: it is
# not reachable from the machines this project runs on, and Debian's build is kept
# patched. Idempotent; prints the browser's path on stdout (all else: stderr).
set -euo pipefail

say() { echo "ensure-browser: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROWSER=/usr/bin/chromium
if [ -x "$BROWSER" ]; then
    echo "$BROWSER"
    exit 0
fi
[ "$(id -u)" = 0 ] || { say "chromium is not installed; run as root to install it"; exit 1; }
say "installing Debian's chromium"
apt_install chromium fonts-dejavu-core
[ -x "$BROWSER" ] || { say "chromium installed but $BROWSER is missing"; exit 1; }
echo "$BROWSER"
