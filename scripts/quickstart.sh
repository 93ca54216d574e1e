#!/usr/bin/env bash
# The main job on the embedded default. Installs Pairio into .venv, starts a hub on SQLite
# (data in .pairio/hub), creates the user "demo" and stores its key for the client
# ('pairio login'), creates hello_world_service with the hello_world app, registers and
# starts a local bridge (.pairio/bridge), runs the seed's three examples and waits for
# their results. Safe to run again: it reuses the hub, the user, the service and the bridge.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PAIRIO_QUICKSTART_PORT:-8000}"
URL="http://127.0.0.1:${PORT}"
DATA=.pairio/hub
BRIDGE=.pairio/bridge
# A Pairio hub answers /healthz with {"status": "ok", ...}
hub_up() { python3 - "$URL" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2) as r:
        sys.exit(0 if json.load(r).get("status") == "ok" else 1)
except (OSError, ValueError):
    sys.exit(1)
PY
}
# Anything at all listening on the port
port_taken() { python3 - "$PORT" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(2)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if port_taken && ! { running .pairio/hub.pid && hub_up; }; then
  echo "another program listens on $URL (not this quick start's hub, whose pid is kept in .pairio/hub.pid):" >&2
  echo "stop it, or pick another port: PAIRIO_QUICKSTART_PORT=8001 bash scripts/quickstart.sh" >&2
  exit 1
fi
mkdir -p .pairio
unset PAIRIO_API_URL PAIRIO_API_KEY  # the examples read the hub and key stored by 'pairio login'

python3 -m venv .venv 2>/dev/null || true
.venv/bin/python -m pip install -q -e '.[all]' 2> >(grep -v '^WARNING: ' >&2)
export PATH="$PWD/.venv/bin:$PATH"

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
pairio login --url "$URL" --api-key "$(cat .pairio/demo-api-key)"

if [ ! -f "$BRIDGE/bridge.json" ]; then
  pairio-bridge register --dir "$BRIDGE" --service hello_world_service --name quickstart \
    --hub-url "$URL" --app "hello_world=$PWD/.venv/bin/python $PWD/apps/hello_world/main.py"
fi
if ! running .pairio/bridge.pid; then
  echo "starting the local bridge (log: .pairio/bridge.log)"
  nohup pairio-bridge local --dir "$BRIDGE" >.pairio/bridge.log 2>&1 &
  echo $! >.pairio/bridge.pid
fi

for example in examples/example1.py examples/example2.py examples/example3.py; do
  echo "--- $example"
  python "$example"
done

echo "--- waiting for the examples' jobs"
python - <<'PY'
import httpx
from pairio import find_jobs

jobs = find_jobs(service_name="hello_world_service", tags=["example"], limit=20)
for job in jobs:
    job.wait_until_done(wait_sec=120)
    print(job.job_url, job.status.value, job.jobDefinition.processorName)
    if job.jobDefinition.processorName == "hello_world_1":
        print("   console:", job.get_console_output().strip())
    for out in job.outputFileResults:
        print(f"   {out.name} ({out.fileBaseName}):", httpx.get(out.url).text.strip())
PY

cat <<MSG

The hub runs at $URL (API docs: $URL/docs) with a local bridge; the client is logged in,
so 'python examples/example1.py' and 'pairio jobs list --service hello_world_service' work
from any shell. Stop both with: kill \$(cat .pairio/bridge.pid) \$(cat .pairio/hub.pid)
MSG
