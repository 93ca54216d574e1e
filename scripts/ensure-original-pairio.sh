#!/usr/bin/env bash
# The original Pairio client and SDK (pairio==0.5.9 from PyPI), in a virtual environment of
# its own: it has the same top-level package name as ours. The compatibility tests
# (tests/test_original_pairio.py and others) use it as the real peer. pubnub is what the
# original compute client needs besides ('pairio register-compute-client' refuses to run
# without it; 'pairio start-compute-client' subscribes with it); 8.1.0 is of the same time
# as pairio 0.5.9. Under CI=true a failed install fails the run; elsewhere those tests are
# skipped, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-original
VERSION=0.5.9
PUBNUB_VERSION=8.1.0
installed() {
    "$VENV/bin/python" -I -c "
import importlib.metadata as m, sys
sys.exit(m.version('pairio') != '$VERSION' or m.version('pubnub') != '$PUBNUB_VERSION')" 2>/dev/null
}
if [ -x "$VENV/bin/python" ] && installed; then
    exit 0
fi
if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } \
    && "$VENV/bin/python" -m pip install -q "pairio==$VERSION" "pubnub==$PUBNUB_VERSION" && installed; then
    exit 0
fi
echo "ensure-original-pairio: could not install pairio==$VERSION and pubnub==$PUBNUB_VERSION into $VENV (is PyPI reachable?)" >&2
if [ "${CI:-}" = "true" ]; then
    exit 1
fi
echo "ensure-original-pairio: the tests against the original Pairio will be skipped" >&2
