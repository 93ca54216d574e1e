"""The watcher run from a copy by import (bridge/watcher_code.py): from the bytecode the bridge wrote, never from
stale bytecode, and with nothing beside the copy standing in for a module. Real interpreter processes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bridge import watch
from bridge.watcher_code import BOOTSTRAP_CODE, bootstrap_argv, write_bytecode

SOURCES = ((Path(watch.__file__), "pairio_watch.py"), (Path(watch.masking_module().__file__), "pairio_masking.py"))


def copy_watcher(directory: Path, *, with_bytecode: bool = True) -> Path:
    """The watcher and its masking module copied into ``directory``, as the Slurm backend does for each job."""
    directory.mkdir(parents=True, exist_ok=True)
    for source, name in SOURCES:
        shutil.copyfile(source, directory / name)
        if with_bytecode:
            write_bytecode(directory / name, source)
    return directory / "pairio_watch.py"


def run_watcher(watcher: Path, job_dir: Path, *python_flags: str, secrets: bool = False) -> subprocess.CompletedProcess[str]:
    """The watcher of a job printing "ran"; with ``secrets``, one that has a secret (so its output is masked)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if secrets:
        watch.write_secrets_file(job_dir, {"TOKEN": "not-printed"})
    return subprocess.run(
        [sys.executable, "-I", "-S", *python_flags, *bootstrap_argv(str(watcher)), "--job-dir", str(job_dir), "--job-id", "J1",
         "--time-sec", "60", "--memory-gb", "1", "--num-cpus", "1", *(["--secrets"] if secrets else []),
         "--", sys.executable, "-c", "print('ran')"],
        capture_output=True, text=True, timeout=120, check=False,
    )


def succeeded(job_dir: Path) -> bool:
    result = json.loads((job_dir / "result.json").read_text())
    return result["phase"] == "succeeded" and (job_dir / "console.txt").read_text() == "ran\n"


def test_the_watcher_runs_from_the_bytecode_the_bridge_wrote(tmp_path: Path) -> None:
    watcher = copy_watcher(tmp_path / "job")
    # -v: the import system says where each module came from; a secret: the masking module is needed too
    done = run_watcher(watcher, tmp_path / "job", "-v", secrets=True)
    assert done.returncode == 0, done.stderr
    assert succeeded(tmp_path / "job")
    for _, name in SOURCES:
        cached = importlib.util.cache_from_source(str(tmp_path / "job" / name))
        assert f"# code object from '{cached}'" in done.stderr, f"{name} was compiled, not loaded from {cached}"


def test_a_copy_that_differs_from_its_bytecode_is_compiled_afresh(tmp_path: Path) -> None:
    watcher = copy_watcher(tmp_path / "job")
    with watcher.open("a") as f:
        f.write("\nEDITED_AFTER_THE_BYTECODE = True\n")
    done = run_watcher(watcher, tmp_path / "job", "-v")
    assert done.returncode == 0, done.stderr
    assert succeeded(tmp_path / "job")
    assert f"# code object from {watcher}" in done.stderr  # the source, not the stale bytecode


def test_without_bytecode_the_first_run_compiles_and_caches_it(tmp_path: Path) -> None:
    watcher = copy_watcher(tmp_path / "tools", with_bytecode=False)
    assert run_watcher(watcher, tmp_path / "job-1").returncode == 0
    assert Path(importlib.util.cache_from_source(str(watcher))).is_file()
    done = run_watcher(watcher, tmp_path / "job-2", "-v")
    assert done.returncode == 0 and succeeded(tmp_path / "job-2")
    assert f"# code object from '{importlib.util.cache_from_source(str(watcher))}'" in done.stderr


def test_files_beside_the_watcher_never_stand_in_for_modules(tmp_path: Path) -> None:
    """The bootstrap loads the watcher by its path and leaves sys.path alone: a json.py (or any module's name) in
    the job directory is never what the watcher imports."""
    job_dir = tmp_path / "job"
    watcher = copy_watcher(job_dir)
    for module in ("json", "subprocess", "signal", "threading", "select", "shutil"):
        (job_dir / f"{module}.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write({module!r})\n")
    done = run_watcher(watcher, job_dir)
    assert done.returncode == 0, done.stderr
    assert succeeded(job_dir)
    assert not (tmp_path / "pwned").exists()


def test_the_bootstrap_is_code_of_its_own_and_the_path_an_argument(tmp_path: Path) -> None:
    odd = tmp_path / "a dir; with 'quotes' and $(signs)"
    watcher = copy_watcher(odd)
    assert bootstrap_argv(str(watcher)) == ["-c", BOOTSTRAP_CODE, str(watcher)]
    assert run_watcher(watcher, odd / "job").returncode == 0
    assert succeeded(odd / "job")


def test_bytecode_that_cannot_be_written_is_only_logged(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "__pycache__").write_text("a file where the cache directory would go")
    watcher = copy_watcher(job_dir)  # no exception: the watcher compiles its copy instead
    assert run_watcher(watcher, job_dir / "run").returncode == 0
    assert succeeded(job_dir / "run")


NOT_FOR_A_PLAIN_JOB = (
    "argparse", "json", "pathlib", "subprocess", "threading", "re", "locale", "urllib", "typing", "dataclasses",
    "importlib.util", "pairio_masking", "shutil", "psutil",
)
"""modules a job without secrets, containers or GPUs must not make its watcher import: each costs every job's start
(bridge/watch.py says why); "importlib.util" is the bootstrap's own, and allowed"""


def imported_modules(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reported (``import time: SELF | CUMULATIVE | NAME``)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:") and "|" in line}


def test_a_plain_job_s_watcher_imports_only_what_it_needs(tmp_path: Path) -> None:
    watcher = copy_watcher(tmp_path / "job")
    done = run_watcher(watcher, tmp_path / "job", "-X", "importtime")
    assert done.returncode == 0, done.stderr
    assert succeeded(tmp_path / "job")
    imported = imported_modules(done.stderr)
    assert "pairio_watch" in imported or "select" in imported, done.stderr  # the report is there
    unwanted = {name for name in imported if name != "importlib.util" and {name, name.split(".")[0]} & set(NOT_FOR_A_PLAIN_JOB)}
    assert not unwanted, f"the watcher of a plain job imported {sorted(unwanted)}"


def test_a_job_with_secrets_still_has_them_masked(tmp_path: Path) -> None:
    """The masking module is loaded only when a job needs it, and then does its work."""
    job_dir = tmp_path / "job"
    watcher = copy_watcher(job_dir)
    job_dir.mkdir(exist_ok=True)
    watch.write_secrets_file(job_dir, {"TOKEN": "s3cret-value"})
    done = subprocess.run(
        [sys.executable, "-I", "-S", *bootstrap_argv(str(watcher)), "--job-dir", str(job_dir),
         "--time-sec", "60", "--memory-gb", "1", "--num-cpus", "1", "--secrets", "--",
         sys.executable, "-c", "import os; print('token', os.environ['TOKEN'])"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (job_dir / "console.txt").read_text() == "token ***\n"
    assert json.loads((job_dir / "result.json").read_text())["phase"] == "succeeded"
