#!/usr/bin/env bash
# The original Pairio client and SDK (pairio==0.5.9 from PyPI), in a virtual environment of
# its own: it has the same top-level package name as ours. The compatibility tests
# (tests/test_original_pairio.py) use it as the real peer. Under CI=true a failed install
# fails the run; elsewhere those tests are skipped, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-original
VERSION=0.5.9
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -I -c "import importlib.metadata as m, sys; sys.exit(m.version('pairio') != '$VERSION')" 2>/dev/null; then
    exit 0
fi
if python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install -q "pairio==$VERSION"; then
    exit 0
fi
echo "ensure-original-pairio: could not install pairio==$VERSION into $VENV (is PyPI reachable?)" >&2
if [ "${CI:-}" = "true" ]; then
    exit 1
fi
echo "ensure-original-pairio: the tests against the original Pairio will be skipped" >&2
