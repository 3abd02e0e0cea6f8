#!/usr/bin/env bash
# A PostgreSQL server for the test suite; prints its admin URL on stdout (all else: stderr).
#
#   ensure-postgres.sh DIR
#
#   1. LMSTACK_TEST_DATABASE_URL set   -> print it, touch nothing (DIR is left alone).
#   2. no PostgreSQL server binaries   -> apt-get install postgresql (Debian's).
#   3. a throw-away cluster in DIR: initdb (as the `postgres` user when run as root, since
#      initdb refuses root; trust auth), started with pg_ctl on 127.0.0.1 and a free port,
#      its unix socket in DIR, durability off (fsync) because nothing here must survive.
#      Waits until it accepts connections, then prints
#      postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
#
# Idempotent: a cluster already running in DIR is reused. scripts/stop-postgres.sh DIR stops
# it and deletes DIR.
set -euo pipefail

say() { echo "ensure-postgres: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# = 1 ] || { say "usage: $0 DIR"; exit 2; }
if [ -n "${LMSTACK_TEST_DATABASE_URL:-}" ]; then
    echo "$LMSTACK_TEST_DATABASE_URL"
    exit 0
fi
DIR="$(realpath -m "$1")"
DATA="$DIR/data"

bin_dir() {
    # The newest installed server, e.g. /usr/lib/postgresql/15/bin.
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

install_postgres() {
    [ "$(id -u)" = 0 ] || { say "PostgreSQL is not installed; run as root to install it"; exit 1; }
    say "installing Debian's postgresql"
    apt_install postgresql
}

# Runs a server binary as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

BIN="$(bin_dir || true)"
if [ -z "$BIN" ]; then
    install_postgres
    BIN="$(bin_dir)" || { say "postgresql installed but no server binaries found"; exit 1; }
fi

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
if [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    PORT="$(sed -n 4p "$DATA/postmaster.pid")"
    say "reusing the cluster in $DIR (port $PORT)"
else
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
            --no-instructions >"$DIR/initdb.log" 2>&1 ||
            { say "initdb failed:"; tail -n 20 "$DIR/initdb.log" >&2; exit 1; }
    fi
    PORT="$(free_port)"
    say "starting PostgreSQL ($BIN) on 127.0.0.1:$PORT, data in $DATA"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null ||
        { say "PostgreSQL did not start:"; tail -n 20 "$DIR/server.log" >&2; exit 1; }
fi
# pg_ctl -w waits for readiness; check once more over TCP, as the suite connects.
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 30 ||
    { say "PostgreSQL is not accepting connections"; tail -n 20 "$DIR/server.log" >&2; exit 1; }
echo "postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
