#!/usr/bin/env bash
# The test command: installs the project with its test extras into .venv, makes sure the
# services the tests use are running (PostgreSQL; MariaDB for Slurm's accounting), installs
# the distribution packages the tests drive (Slurm, sshd, Chromium: the tests start and stop
# their own instances), and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv 2>/dev/null || python3 -m venv --without-pip .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
bash scripts/ensure-postgres.sh
bash scripts/ensure-test-packages.sh
bash scripts/ensure-mariadb.sh
bash scripts/ensure-container-engine.sh
bash scripts/ensure-original-pairio.sh

# PAIRIO_TEST_WORKERS=N runs the tests in N pytest-xdist worker processes, a module (all Slurm modules
# together) per worker at a time (tests/conftest.py). The default is 0, one process: on a 2-core machine
# the container tests slowed each other down past their bounds when run in parallel (README, Development).
workers="${PAIRIO_TEST_WORKERS:-0}"
parallel=()
if [[ "$workers" != 0 && " $* " != *" -n "* && " $* " != *" --numprocesses"* ]]; then
    parallel=(-n "$workers" --dist loadscope --no-loadscope-reorder)
fi

exec .venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
