#!/usr/bin/env bash
# The main job on the embedded default: install Pairio into .venv, start a hub on SQLite
# (data in .pairio/hub), create a user, a service and the hello_world app, and submit the
# seed's three examples. Safe to run again: it reuses the hub, the user and the service.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PAIRIO_QUICKSTART_PORT:-8000}"
URL="http://127.0.0.1:${PORT}"
DATA=.pairio/hub
mkdir -p .pairio

python3 -m venv .venv 2>/dev/null || true
.venv/bin/python -m pip install -q -e .
export PATH="$PWD/.venv/bin:$PATH"

hub_up() { python - "$URL" <<'PY'
import sys, httpx
try:
    sys.exit(0 if httpx.get(sys.argv[1] + "/v1/services", timeout=2).status_code == 200 else 1)
except httpx.HTTPError:
    sys.exit(1)
PY
}

if ! hub_up; then
  echo "starting the hub on $URL (log: .pairio/hub.log)"
  nohup pairio hub serve --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" >.pairio/hub.log 2>&1 &
  echo $! >.pairio/hub.pid
  for _ in $(seq 1 60); do hub_up && break; sleep 0.5; done
  hub_up || { echo "the hub did not start; see .pairio/hub.log" >&2; exit 1; }
fi

if [ ! -s .pairio/demo-api-key ]; then
  pairio admin --data-dir "$DATA" create-user demo | tail -n 1 >.pairio/demo-api-key
  pairio admin --data-dir "$DATA" create-service hello_world_service --owner demo
fi
pairio admin --data-dir "$DATA" add-app hello_world_service apps/hello_world/spec.json

export PAIRIO_API_URL="$URL"
PAIRIO_API_KEY="$(cat .pairio/demo-api-key)"
export PAIRIO_API_KEY
for example in examples/example1.py examples/example2.py examples/example3.py; do
  echo "--- $example"
  python "$example"
done

cat <<MSG

The hub is running at $URL (API docs: $URL/docs). To use it from this shell:
  export PAIRIO_API_URL=$URL PAIRIO_API_KEY=\$(cat .pairio/demo-api-key)
Stop it with: kill \$(cat .pairio/hub.pid)
MSG
