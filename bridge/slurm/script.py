"""The batch script and the sbatch command line of a job: pure functions, checked against recorded files.

The mapping from a job's resources to sbatch options is ``slurm_resource_options``; it
rounds up everywhere, because a job that gets less than it asked for fails late and
confusingly (Parsl floors ``--time`` and loses up to a minute).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from pairio.models import PairioJobRequiredResources

from ..watcher_code import BOOTSTRAP_CODE
from .site import GpuStyle, MemoryStyle, SlurmSiteOptions

EXIT_CODE_FILE = "slurm_exit_code"
SLURM_JOB_ID_FILE = "slurm_job_id"
SCRIPT_FILE = "slurm_job.sh"
WATCHER_SCRIPT_FILE = "pairio_watch.py"
"""a copy of bridge/watch.py in each job directory: compute nodes need Python and psutil, not this project"""
MASKING_SCRIPT_FILE = "pairio_masking.py"
"""a copy of pairio/masking.py beside it: the watcher masks secrets in the console with it"""
SLURM_PASS_ENV = ("SLURM_*",)
"""what the processor gets of the batch job's environment besides the watcher's allow-list: the allocation's own
variables and the site's ``exportEnv``, nothing else of the environment sbatch copied from the bridge"""
STDOUT_FILE = "slurm.out"
STDERR_FILE = "slurm.err"
_JOB_ID = re.compile(r"[A-Za-z0-9]+")


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} may hold only letters and digits")
    return job_id


def _check_job_dir(job_dir: Path) -> Path:
    if not job_dir.is_absolute():
        raise ValueError(f"the job directory must be an absolute path (compute nodes resolve it elsewhere), got {job_dir}")
    # sbatch expands %j, %u, ... in --output/--error, and a newline would break the script
    if "%" in str(job_dir) or "\n" in str(job_dir):
        raise ValueError(f"the job directory {str(job_dir)!r} may not contain '%' or a newline; choose another jobsDir")
    return job_dir


def _mib(gb: float) -> int:
    return math.ceil(gb * 1024)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def slurm_resource_options(resources: PairioJobRequiredResources, site: SlurmSiteOptions) -> list[str]:
    """The sbatch options that ask for a job's resources (see docs/prior-art.md, "Slurm directive mapping")."""
    minutes = max(1, math.ceil(resources.timeSec / 60))
    options = [f"--time={minutes}"]
    if site.memoryStyle is MemoryStyle.MEM_PER_CPU:
        options.append(f"--mem-per-cpu={math.ceil(resources.memoryGb * 1024 / resources.numCpus)}M")
    else:
        options.append(f"--mem={_mib(resources.memoryGb)}M")
    options += [f"--cpus-per-task={resources.numCpus}", "--ntasks=1", "--nodes=1"]
    n = resources.numGpus
    if n > 0:
        if site.gpuStyle is GpuStyle.GRES:
            options.append(f"--gres=gpu:{n}")
        elif site.gpuStyle is GpuStyle.GRES_TYPED:
            options.append(f"--gres=gpu:{site.gpuType}:{n}")
        elif site.gpuStyle is GpuStyle.GPUS:
            options.append(f"--gpus={n}")
        else:
            options.append(f"--gpus-per-node={n}")
    return options


def site_options(resources: PairioJobRequiredResources, site: SlurmSiteOptions) -> list[str]:
    """The site's own sbatch options for this job (partition, account, ..., extra directives)."""
    options = []
    partition = site.partition_for(resources)
    for name, value in (
        ("partition", partition),
        ("account", site.account),
        ("qos", site.qos),
        ("constraint", site.constraint),
        ("reservation", site.reservation),
    ):
        if value:
            options.append(f"--{name}={value}")
    return options + list(site.extraDirectives)


def job_name(site: SlurmSiteOptions, job_id: str) -> str:
    return f"{site.jobNamePrefix}{check_job_id(job_id)}"


def sbatch_argv(site: SlurmSiteOptions, job_id: str, job_dir: Path, script_path: Path) -> list[str]:
    """The sbatch command line; every option comes before the script, or sbatch hands it to the script."""
    job_dir = _check_job_dir(job_dir)
    return [
        site.sbatchCommand,
        "--parsable",
        f"--job-name={job_name(site, job_id)}",
        f"--chdir={job_dir}",
        f"--output={job_dir / STDOUT_FILE}",
        f"--error={job_dir / STDERR_FILE}",
        str(script_path),
    ]


OCI_ENGINES = ("podman", "docker")
"""container modes whose watcher creates a named container: the batch script removes it should the watcher be killed"""
GPU_IDS_VISIBLE = '"${CUDA_VISIBLE_DEVICES:-}"'
"""the job's GPUs as its processes number them: Slurm's CUDA_VISIBLE_DEVICES (relative to a device cgroup, where the
site constrains devices); what a processor on the node, or in apptainer (which shares the node's devices), uses"""
GPU_IDS_GLOBAL = '"${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}}"'
"""the job's GPUs as the node numbers them (Slurm's global ids; CUDA_VISIBLE_DEVICES where Slurm sets no other): what a
container engine's device options name, since the engine hands host devices to the container"""


def watcher_option(watcher_args: Sequence[str], name: str) -> str:
    """The value of ``name`` (``--container-engine``, ...) among the watcher's options, or "" when absent."""
    for i, arg in enumerate(watcher_args):
        if arg == name and i + 1 < len(watcher_args):
            return watcher_args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return ""


def gpu_ids_expression(container_engine: str) -> str:
    """Where the watcher's ``--gpus`` come from in the allocation, for a job run with this engine ("" for none)."""
    return GPU_IDS_GLOBAL if container_engine in OCI_ENGINES else GPU_IDS_VISIBLE


def container_removal(container_engine: str, container_name: str) -> str:
    """The shell command the batch script runs on exit when the watcher left no result (it was killed): the container
    goes with the job. ``--time 0``: Slurm's KillWait (seconds after its SIGTERM) is all the time there is."""
    q = shlex.quote
    force = "--force --time 0" if container_engine == "podman" else "--force"
    return (
        f'[ -e "$JOB_DIR/result.json" ] || {q(container_engine)} rm {force} {q(container_name)} >/dev/null 2>&1 || true'
    )


def render_sbatch_script(
    job_id: str,
    job_dir: Path,
    resources: PairioJobRequiredResources,
    site: SlurmSiteOptions,
    processor_argv: Sequence[str],
    python_executable: str,
    *,
    watcher_args: Sequence[str] = (),
    watcher_path: str = "",
) -> str:
    """The batch script: directives, site environment and prologue, then the watcher running the processor.

    The watcher (a copy of bridge/watch.py in the job directory) enforces the time and
    memory limits itself (many clusters do not) and writes result.json; the script
    records its Slurm job id when it starts (a restarted bridge finds the job by it) and
    its own exit status in ``slurm_exit_code`` on every exit, so a job that left the
    queue is settled from files, never assumed. A requeued job starts by removing what
    its earlier run left.
    """
    check_job_id(job_id)
    job_dir = _check_job_dir(job_dir)
    if not processor_argv:
        raise ValueError("the processor's argv is empty")
    q = shlex.quote
    engine = watcher_option(watcher_args, "--container-engine")
    container = watcher_option(watcher_args, "--container-name") if engine in OCI_ENGINES else ""
    on_exit = 'status=$?; '
    if container:
        on_exit += container_removal(engine, container).replace("'", "'\"'\"'") + "; "
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {option}" for option in slurm_resource_options(resources, site) + site_options(resources, site)]
    lines += [
        f"# Pairio job {job_id}, written by the Pairio Slurm bridge.",
        "set -u",
        f"JOB_DIR={q(str(job_dir))}",
        f"PYTHON={q(python_executable)}",
        # a requeued job (node failure, preemption) runs this script again: forget the earlier run's ending
        f'rm -f "$JOB_DIR/{EXIT_CODE_FILE}" "$JOB_DIR/result.json" "$JOB_DIR/watcher.json"',
        f'printf "%s\\n" "${{SLURM_JOB_ID:-}}" > "$JOB_DIR/{SLURM_JOB_ID_FILE}"',
        # runs on every exit, also when the prologue fails; written then renamed so a reader never sees half a file
        # podman/docker: a killed watcher leaves its container; it goes first, so a job seen ended has none left
        "trap '" + on_exit + 'printf "%s\\n" "$status" > "$JOB_DIR/' + EXIT_CODE_FILE + '.tmp" && mv -f "$JOB_DIR/'
        + EXIT_CODE_FILE + '.tmp" "$JOB_DIR/' + EXIT_CODE_FILE + '"\' EXIT',
    ]
    lines += [f"export {name}={q(value)}" for name, value in site.exportEnv.items()]
    if site.prologue:
        # module and conda scripts read unset variables, so the prologue runs without set -u
        lines += ["# site prologue", "set +u", *site.prologue, "set -u"]
    # -I: PYTHON* variables and the user site never change what the watcher runs. -S where the node has /proc:
    # the watcher then needs only the standard library (else psutil), and starts without importing site
    lines.append('WATCHER_FLAGS="-I"; if [ -r /proc/self/stat ]; then WATCHER_FLAGS="-I -S"; fi')
    # the watcher (the copy in the job directory, or over SSH the one in the cluster's tools directory) is imported
    # by a constant bootstrap, not run as a script, so its cached bytecode is used (bridge/watcher_code.py)
    watcher = [
        f'"$PYTHON" $WATCHER_FLAGS -c {q(BOOTSTRAP_CODE)} '
        + (q(watcher_path) if watcher_path else f'"$JOB_DIR/{WATCHER_SCRIPT_FILE}"') + ' --job-dir "$JOB_DIR"',
        f"--time-sec {_number(resources.timeSec)}",
        f"--memory-gb {_number(resources.memoryGb)}",
        f"--num-cpus {resources.numCpus}",
        *(q(arg) for arg in watcher_args),
        *(q(f"--pass-env={name}") for name in (*SLURM_PASS_ENV, *site.exportEnv)),
    ]
    if resources.numGpus > 0:
        # the GPUs of Slurm's allocation (the watcher would otherwise hide every GPU); see gpu_ids_expression
        watcher.append(f"--gpus {gpu_ids_expression(engine)}")
    watcher.append("-- " + " ".join(q(arg) for arg in processor_argv))
    lines.append(" ".join(watcher))
    lines.append("exit $?")
    return "\n".join(lines) + "\n"
