#!/usr/bin/env bash
# Stops the throw-away cluster scripts/ensure-postgres.sh started in DIR and deletes DIR.
# Safe to call when nothing runs there (or DIR does not exist).
#
#   stop-postgres.sh DIR
set -euo pipefail

[ $# = 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$1"
DATA="$DIR/data"
if [ -f "$DATA/postmaster.pid" ]; then
    BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    else
        "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
fi
rm -rf "$DIR"
