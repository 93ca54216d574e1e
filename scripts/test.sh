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

# The tests run in pytest-xdist worker processes, a module (all Slurm modules together) per worker at a
# time (tests/conftest.py): by default one per CPU, at most 4. PAIRIO_TEST_WORKERS=N sets how many;
# 0 runs everything in this one process.
cpus="$(nproc 2>/dev/null || echo 1)"
workers="${PAIRIO_TEST_WORKERS:-$(( cpus < 4 ? cpus : 4 ))}"
if [[ "$workers" == 1 ]]; then workers=0; fi
parallel=()
if [[ "$workers" != 0 && " $* " != *" -n "* && " $* " != *" --numprocesses"* ]]; then
    parallel=(-n "$workers" --dist loadscope --no-loadscope-reorder)
fi

exec .venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
