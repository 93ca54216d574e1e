"""Installs that fit each role: ``pip install pairio`` is the client and the app SDK; the hub and the
bridges are extras, and their commands say which extra to install when it is missing.

A fresh virtual environment gets the package without extras (built from this checkout by pip, as a
user's install would); the seed's examples then run in it against a real hub on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .hubtools import REPO, Seed

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def client_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("client-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)], capture_output=True, text=True, timeout=540,
    )
    if installed.returncode != 0:
        message = f"pip could not install the package without extras: {installed.stderr[-2000:]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield venv


def run(venv: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    program = argv[0] if argv[0].startswith("/") else str(venv / "bin" / argv[0])
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRIO_", "PYTHON"))}
    return subprocess.run([program, *argv[1:]], capture_output=True, text=True, timeout=120, env={**clean, **(env or {})}, cwd=venv.parent)


def test_the_plain_install_is_the_client_and_sdk_only(client_only_venv: Path) -> None:
    probe = run(client_only_venv, "python", "-c", (
        "import importlib.util as u, pairio;"
        "from pairio.client import submit_job, PairioJobDefinition, PairioJobRequiredResources;"
        "from pairio.sdk import App, ProcessorBase, InputFile, OutputFile;"
        "print(pairio.__version__, [m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'psutil', 'paramiko') if u.find_spec(m)])"
    ))
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split(" ", 1)[1].strip() == "[]", probe.stdout  # none of the hub's or bridges' packages


def test_commands_name_the_extra_they_need(client_only_venv: Path, tmp_path: Path) -> None:
    for argv in (["pairio", "hub", "serve", "--data-dir", str(tmp_path / "h")], ["pairio", "admin", "--data-dir", str(tmp_path / "h"), "create-user", "x"]):
        out = run(client_only_venv, *argv)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "pip install 'pairio[hub]'" in out.stderr, out.stderr
    out = run(client_only_venv, "pairio-bridge", "local", "--dir", str(tmp_path / "b"))
    assert out.returncode == 1 and "pip install 'pairio[bridge]'" in out.stderr and "Traceback" not in out.stderr, out.stderr
    for argv in (["pairio-bridge", "--help"], ["pairio-bridge", "--version"], ["pairio", "--version"]):
        assert run(client_only_venv, *argv).returncode == 0, argv


def test_the_seed_examples_run_from_the_plain_install(client_only_venv: Path, live_hub: object, seeded: Seed) -> None:
    url = live_hub.url  # type: ignore[attr-defined]
    env = {"PAIRIO_API_URL": url, "PAIRIO_API_KEY": seeded.key}
    lines = []
    for name in ("example1.py", "example2.py", "example3.py"):
        out = run(client_only_venv, "python", str(REPO / "examples" / name), env=env)
        assert out.returncode == 0, out.stderr
        lines += out.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{url}/job/") for line in lines), lines


def test_package_metadata() -> None:
    from importlib.metadata import metadata

    meta = metadata("pairio")
    assert set(meta.get_all("Provides-Extra") or []) >= {"hub", "bridge", "all", "test"}
    assert meta.get("License-Expression") == "Apache-2.0" or "Apache" in (meta.get("License") or ""), dict(meta)
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in meta.get_all("Classifier") or [])
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
