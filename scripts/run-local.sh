#!/usr/bin/env bash
# `make run`: the controller on SQLite under $DATA_DIR, plus an agent for this
# host that joins it. The agent joins even when no Docker engine is reachable
# (the worker then shows a runtime_error) and reports zero GPUs when there is
# no NVIDIA driver. Ctrl-C stops both; engine containers are left running.
set -euo pipefail

VENV=${VENV:-.venv}
DATA_DIR=${DATA_DIR:-./data}
HOST=${LMSTACK_HOST:-127.0.0.1}
PORT=${LMSTACK_PORT:-8088}
GRPC_PORT=${LMSTACK_GRPC_PORT:-50051}

"$VENV/bin/lmstack-controller" --data-dir "$DATA_DIR" --host "$HOST" --port "$PORT" \
  --grpc-port "$GRPC_PORT" &
controller=$!
agent=""
stop() {
  [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null || true
  kill -TERM "$controller" 2>/dev/null || true
  wait
}
trap stop INT TERM EXIT

for _ in $(seq 1 100); do
  if curl -fsS "http://$HOST:$PORT/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$controller" 2>/dev/null; then echo "controller failed to start" >&2; exit 1; fi
  sleep 0.1
done

token=${LMSTACK_AGENT_TOKEN:-$(cat "$DATA_DIR/agent_token")}
LMSTACK_TOKEN="$token" "$VENV/bin/lmstack-agent" --controller "127.0.0.1:$GRPC_PORT" \
  --state-dir "$DATA_DIR/agent" --advertise-address 127.0.0.1 &
agent=$!

cat <<MSG

  LMStack is running.
    REST API   http://$HOST:$PORT   (OpenAPI: /api/openapi.json)
    log in     user 'admin', password in $DATA_DIR/initial_admin_password
               (unless LMSTACK_ADMIN_PASSWORD was set)
    agents     dial $(hostname):$GRPC_PORT with the token in $DATA_DIR/agent_token
  Ctrl-C stops both daemons.

MSG
wait "$controller"
