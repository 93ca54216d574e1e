"""The pure layer of the Slurm backend: resource mapping, batch script, site options, states, parsers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.backend import NativePhase
from bridge.slurm import (
    SLURM_STATE_PHASE,
    SlurmOutputError,
    SlurmSiteOptions,
    outcome_from_slurm,
    parse_sacct,
    parse_squeue,
    parse_squeue_json,
    render_sbatch_script,
    sbatch_argv,
    slurm_resource_options,
)
from bridge.slurm.states import SLURM_STATE_ERROR
from bridge.watcher_code import BOOTSTRAP_CODE
from pairio.models import PairioJobRequiredResources

DATA = Path(__file__).parent / "data" / "slurm"
JOB_DIR = Path("/shared/pairio/jobs/job123")
PYTHON = "/opt/pairio/venv/bin/python"


def res(cpus: int = 1, gpus: int = 0, mem: float = 1, time: float = 60) -> PairioJobRequiredResources:
    return PairioJobRequiredResources(numCpus=cpus, numGpus=gpus, memoryGb=mem, timeSec=time)


def option(options: list[str], prefix: str) -> str:
    (found,) = [o for o in options if o.startswith(prefix)]
    return found


# ---------------------------------------------------------------- resource mapping


@pytest.mark.parametrize("time_sec, minutes", [(1, 1), (0.5, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (3601, 61), (86400, 1440)])
def test_time_is_whole_minutes_rounded_up(time_sec: float, minutes: int) -> None:
    assert option(slurm_resource_options(res(time=time_sec), SlurmSiteOptions()), "--time=") == f"--time={minutes}"


@pytest.mark.parametrize("memory_gb, mib", [(4, 4096), (0.5, 512), (1.1, 1127), (1, 1024), (0.001, 2)])
def test_memory_is_mib_rounded_up(memory_gb: float, mib: int) -> None:
    assert option(slurm_resource_options(res(mem=memory_gb), SlurmSiteOptions()), "--mem") == f"--mem={mib}M"


def test_memory_per_cpu_when_the_site_says_so() -> None:
    site = SlurmSiteOptions(memoryStyle="mem-per-cpu")
    options = slurm_resource_options(res(cpus=3, mem=4), site)
    assert option(options, "--mem") == "--mem-per-cpu=1366M"  # ceil(4096 / 3)
    assert not any(o.startswith("--mem=") for o in options)


def test_cpus_tasks_nodes() -> None:
    options = slurm_resource_options(res(cpus=8), SlurmSiteOptions())
    assert options[-3:] == ["--cpus-per-task=8", "--ntasks=1", "--nodes=1"]


@pytest.mark.parametrize(
    "site, expected",
    [
        ({}, "--gres=gpu:2"),
        ({"gpuStyle": "gres"}, "--gres=gpu:2"),
        ({"gpuStyle": "gres-typed", "gpuType": "a100"}, "--gres=gpu:a100:2"),
        ({"gpuStyle": "gpus"}, "--gpus=2"),
        ({"gpuStyle": "gpus-per-node"}, "--gpus-per-node=2"),
    ],
)
def test_gpu_styles(site: dict, expected: str) -> None:
    site_options = SlurmSiteOptions(**site)
    assert slurm_resource_options(res(gpus=2), site_options)[-1] == expected
    assert not any("gpu" in o for o in slurm_resource_options(res(gpus=0), site_options))


def test_full_mapping() -> None:
    assert slurm_resource_options(res(cpus=4, gpus=1, mem=16, time=7200), SlurmSiteOptions()) == [
        "--time=120", "--mem=16384M", "--cpus-per-task=4", "--ntasks=1", "--nodes=1", "--gres=gpu:1",
    ]


# ---------------------------------------------------------------- sbatch command line


def test_sbatch_options_come_before_the_script() -> None:
    script = JOB_DIR / "job.sbatch"
    argv = sbatch_argv(SlurmSiteOptions(sbatchCommand="/site/bin/sbatch"), "job123", JOB_DIR, script)
    assert argv == [
        "/site/bin/sbatch",
        "--parsable",
        "--job-name=pairio-job123",
        f"--chdir={JOB_DIR}",
        f"--output={JOB_DIR}/slurm.out",
        f"--error={JOB_DIR}/slurm.err",
        str(script),
    ]
    assert argv[-1] == str(script) and all(a.startswith("--") for a in argv[1:-1])


def test_job_name_prefix_is_configurable() -> None:
    argv = sbatch_argv(SlurmSiteOptions(jobNamePrefix="lab-"), "abc", JOB_DIR, JOB_DIR / "s")
    assert "--job-name=lab-abc" in argv


@pytest.mark.parametrize("job_id", ["", "a b", "a;rm", "../x", "x\n"])
def test_bad_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(ValueError, match="letters and digits"):
        sbatch_argv(SlurmSiteOptions(), job_id, JOB_DIR, JOB_DIR / "s")
    with pytest.raises(ValueError, match="letters and digits"):
        render_sbatch_script(job_id, JOB_DIR, res(), SlurmSiteOptions(), ["true"], PYTHON)


@pytest.mark.parametrize("job_dir", [Path("relative/dir"), Path("/jobs/100%/x")])
def test_bad_job_dirs_are_refused(job_dir: Path) -> None:
    with pytest.raises(ValueError, match="job directory"):
        sbatch_argv(SlurmSiteOptions(), "abc", job_dir, Path("/s"))


# ---------------------------------------------------------------- the batch script


def full_site() -> SlurmSiteOptions:
    return SlurmSiteOptions(
        partition="cpu",
        gpuPartition="gpu",
        partitionRules=[{"partition": "bigmem", "minMemoryGb": 256}],
        account="lab42",
        qos="normal",
        constraint="intel&ib",
        reservation="maint-window",
        gpuStyle="gres-typed",
        gpuType="a100",
        extraDirectives=["--exclusive", "--mail-type=NONE"],
        prologue=["module load python/3.11", "source /shared/venvs/pairio/bin/activate"],
        exportEnv={"HDF5_USE_FILE_LOCKING": "FALSE", "LAB_NOTE": "it's a \"test\" $(whoami)"},
    )


def test_expected_basic_script() -> None:
    text = render_sbatch_script("job123", JOB_DIR, res(cpus=2, mem=4, time=3600), SlurmSiteOptions(), ["python", "main.py"], PYTHON)
    assert text == (DATA / "expected_basic.sh").read_text()


def test_expected_script_with_site_options() -> None:
    text = render_sbatch_script(
        "job123", JOB_DIR, res(cpus=4, gpus=2, mem=1.1, time=61), full_site(), ["python", "/apps/main.py"], PYTHON
    )
    assert text == (DATA / "expected_site.sh").read_text()


def test_partition_rules() -> None:
    site = full_site()
    assert site.partition_for(res()) == "cpu"
    assert site.partition_for(res(gpus=1)) == "gpu"
    assert site.partition_for(res(gpus=1, mem=512)) == "bigmem"  # the first matching rule wins
    assert SlurmSiteOptions().partition_for(res(gpus=1)) is None  # the cluster's default
    assert not any(line.startswith("#SBATCH --partition") for line in render_sbatch_script(
        "a", JOB_DIR, res(), SlurmSiteOptions(), ["true"], PYTHON).splitlines())


def test_directives_come_before_any_command() -> None:
    lines = render_sbatch_script("a", JOB_DIR, res(gpus=1), full_site(), ["true"], PYTHON).splitlines()
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[: last_directive + 1])


HOSTILE_ARGV = ["python", "/my apps/main.py", "it's", '"quoted"', "$(touch /tmp/pwned)", "`id`", "a;b", "$HOME", "*"]


def test_processor_argv_is_shell_quoted() -> None:
    text = render_sbatch_script("a", JOB_DIR, res(), SlurmSiteOptions(), HOSTILE_ARGV, PYTHON)
    assert "'/my apps/main.py' 'it'\"'\"'s' '\"quoted\"' '$(touch /tmp/pwned)' '`id`' 'a;b' '$HOME' '*'" in text


bash = shutil.which("bash")
needs_bash = pytest.mark.skipif(bash is None, reason="bash is not installed")


@needs_bash
@pytest.mark.parametrize("gpus", [0, 2])
def test_rendered_scripts_pass_bash_syntax_check(tmp_path: Path, gpus: int) -> None:
    for site in (SlurmSiteOptions(), full_site()):
        script = tmp_path / "job.sbatch"
        script.write_text(render_sbatch_script("a", JOB_DIR, res(gpus=gpus), site, HOSTILE_ARGV, PYTHON))
        subprocess.run([bash, "-n", str(script)], check=True, capture_output=True)


def fake_python(tmp_path: Path, exit_code: int) -> Path:
    """Stands in for the watcher: records its argv (one per line) and its environment's LAB_NOTE."""
    fake = tmp_path / "fake-python"
    fake.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv.txt\n'
        f'printf "%s" "${{LAB_NOTE:-}}" > {tmp_path}/note.txt\n'
        f'printf "%s" "${{CUDA_VISIBLE_DEVICES-unset}}" > {tmp_path}/cuda.txt\n'
        f"exit {exit_code}\n"
    )
    fake.chmod(0o755)
    return fake


@needs_bash
@pytest.mark.parametrize("exit_code", [0, 3])
def test_script_runs_the_watcher_and_records_its_exit_code(tmp_path: Path, exit_code: int) -> None:
    job_dir = tmp_path / "job dir"
    job_dir.mkdir()
    site = full_site().model_copy(update={"prologue": ["true"]})
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch_script("a", job_dir, res(cpus=2, gpus=1, mem=1.5, time=90), site, HOSTILE_ARGV,
                                           str(fake_python(tmp_path, exit_code))))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"CUDA_VISIBLE_DEVICES": "0,1"}
    done = subprocess.run([bash, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == exit_code, done.stderr
    assert (job_dir / "slurm_exit_code").read_text() == f"{exit_code}\n"
    assert not (tmp_path / "pwned").exists()
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv == [  # -S: this machine has /proc, so the watcher needs no site-packages
        "-I", "-S", "-c", BOOTSTRAP_CODE, str(job_dir / "pairio_watch.py"), "--job-dir", str(job_dir), "--time-sec", "90", "--memory-gb", "1.5", "--num-cpus", "2",
        "--pass-env=SLURM_*", "--pass-env=HDF5_USE_FILE_LOCKING", "--pass-env=LAB_NOTE", "--gpus", "0,1", "--", *HOSTILE_ARGV,
    ]
    assert (tmp_path / "note.txt").read_text() == "it's a \"test\" $(whoami)"


@needs_bash
def test_exit_code_is_recorded_when_the_prologue_breaks(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    site = SlurmSiteOptions(prologue=["exit 7"])
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch_script("a", job_dir, res(), site, ["true"], str(fake_python(tmp_path, 0))))
    done = subprocess.run([bash, str(script)], capture_output=True, timeout=10)
    assert done.returncode == 7
    assert (job_dir / "slurm_exit_code").read_text() == "7\n"
    assert not (tmp_path / "argv.txt").exists()


# ---------------------------------------------------------------- site options


@pytest.mark.parametrize(
    "options, message",
    [
        ({"extraDirectives": ["--exclusive\n#SBATCH --x"]}, "newline"),
        ({"extraDirectives": ["#SBATCH --exclusive"]}, "starting with '--'"),
        ({"extraDirectives": ["-N 2"]}, "starting with '--'"),
        ({"exportEnv": {"BAD-NAME": "x"}}, "not a valid environment variable name"),
        ({"exportEnv": {"1X": "x"}}, "not a valid environment variable name"),
        ({"prologue": ["module load a\nrm -rf /"]}, "newline"),
        ({"partition": "gpu debug"}, "one word"),
        ({"account": "lab\n#SBATCH --x"}, "one word"),
        ({"gpuStyle": "gres-typed"}, "needs gpuType"),
        ({"gpuStyle": "gpu"}, "gpuStyle"),
        ({"memoryStyle": "mem-per-gpu"}, "memoryStyle"),
        ({"jobNamePrefix": "pairio job"}, "jobNamePrefix"),
        ({"partitonn": "gpu"}, "partitonn"),
        ({"maxQueuedJobs": 0}, "maxQueuedJobs"),
    ],
)
def test_bad_site_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SlurmSiteOptions(**options)


def test_site_options_defaults() -> None:
    site = SlurmSiteOptions()
    assert (site.sbatchCommand, site.squeueCommand, site.scancelCommand, site.sacctCommand) == ("sbatch", "squeue", "scancel", "sacct")
    assert site.jobNamePrefix == "pairio-" and site.partition is None
    assert SlurmSiteOptions.model_validate(json.loads(full_site().model_dump_json())) == full_site()


# ---------------------------------------------------------------- states

LISTED_STATES = [
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "COMPLETED", "FAILED", "TIMEOUT",
    "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
    "SIGNALING", "STOPPED", "STAGE_OUT", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",  # flags squeue -o %T names
]
FAILING = ["FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "DEADLINE", "SPECIAL_EXIT", "REVOKED"]


def test_every_listed_state_is_mapped() -> None:
    assert set(SLURM_STATE_PHASE) == set(LISTED_STATES)
    for state in LISTED_STATES:
        assert outcome_from_slurm(state).phase is SLURM_STATE_PHASE[state]
    assert {s for s, p in SLURM_STATE_PHASE.items() if p is NativePhase.FAILED} == set(FAILING)
    assert [s for s, p in SLURM_STATE_PHASE.items() if p is NativePhase.SUCCEEDED] == ["COMPLETED"]


def test_failing_states_have_distinct_readable_errors() -> None:
    errors = [outcome_from_slurm(state, "0:0").error for state in FAILING]
    assert all(errors) and len(set(errors)) == len(errors)
    assert set(SLURM_STATE_ERROR) == set(FAILING)
    assert "time limit" in outcome_from_slurm("TIMEOUT", "0:1").error
    assert "memory" in outcome_from_slurm("OUT_OF_MEMORY", "0:125").error


def test_failed_carries_its_exit_code() -> None:
    outcome = outcome_from_slurm("FAILED", "3:0", "NonZeroExitCode")
    assert outcome.phase is NativePhase.FAILED and outcome.exit_code == 3
    assert "exit code 3" in outcome.error
    assert "signal 9" in outcome_from_slurm("FAILED", "0:9").error


def test_cancelled_by_a_user() -> None:
    outcome = outcome_from_slurm("CANCELLED by 1234", "0:15")
    assert outcome.phase is NativePhase.FAILED
    assert "cancelled on the cluster" in outcome.error and "by 1234" in outcome.error


def test_pending_shows_its_reason() -> None:
    assert outcome_from_slurm("PENDING", None, "Resources") == outcome_from_slurm("PENDING", reason="Resources")
    assert outcome_from_slurm("PENDING", reason="QOSMaxJobsPerUserLimit").reason == "QOSMaxJobsPerUserLimit"
    assert outcome_from_slurm("PENDING", reason="None").reason is None


def test_completed_succeeds() -> None:
    outcome = outcome_from_slurm("COMPLETED", "0:0")
    assert outcome.phase is NativePhase.SUCCEEDED and outcome.exit_code == 0 and outcome.error is None


@pytest.mark.parametrize(
    "state, phase",
    [("COMPLETING", NativePhase.RUNNING), ("STAGE_OUT", NativePhase.RUNNING), ("SIGNALING", NativePhase.RUNNING),
     ("STOPPED", NativePhase.RUNNING), ("CONFIGURING", NativePhase.QUEUED), ("REQUEUED", NativePhase.QUEUED),
     ("REQUEUE_HOLD", NativePhase.QUEUED), ("REQUEUE_FED", NativePhase.QUEUED), ("RESV_DEL_HOLD", NativePhase.QUEUED)],
)
def test_the_flags_squeues_text_format_names_instead_of_the_state_never_settle_a_job(state: str, phase: NativePhase) -> None:
    """squeue -o %T prints a flag (COMPLETING, STAGE_OUT, ...) in place of the base state: each is known, none is final."""
    assert outcome_from_slurm(state, "0:0").phase is phase


@pytest.mark.parametrize("state", ["STOPPED_SOMEHOW", "", "COMPLETEDISH"])
def test_unknown_state_is_never_completed(state: str, caplog: pytest.LogCaptureFixture) -> None:
    outcome = outcome_from_slurm(state, "0:0")
    assert outcome.phase is NativePhase.QUEUED
    assert outcome.reason == f"unknown Slurm state {state}"
    assert "unknown Slurm state" in caplog.text


# ---------------------------------------------------------------- parsers


def test_parse_squeue() -> None:
    text = "101|PENDING|Resources\n102|RUNNING|None\n103|PENDING|QOSMaxJobsPerUserLimit\n104_3|COMPLETING|\n\n"
    assert parse_squeue(text) == {
        "101": ("PENDING", "Resources"),
        "102": ("RUNNING", None),
        "103": ("PENDING", "QOSMaxJobsPerUserLimit"),
        "104_3": ("COMPLETING", None),
    }
    assert parse_squeue("") == {}


@pytest.mark.parametrize("text", ["101 PENDING Resources", "|PENDING|x", "slurm_load_jobs error: Socket timed out"])
def test_parse_squeue_refuses_garbage(text: str) -> None:
    with pytest.raises(SlurmOutputError, match="squeue"):
        parse_squeue(text)


SQUEUE_JSON_22_05 = {
    "meta": {"Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"}},
    "errors": [],
    "jobs": [
        {"job_id": 201, "name": "pairio-a", "job_state": "PENDING", "state_reason": "Priority"},
        {"job_id": 202, "name": "pairio-b", "job_state": "RUNNING", "state_reason": "None"},
        {"job_id": 203, "name": "pairio-c", "job_state": "TIMEOUT", "state_reason": "TimeLimit"},
    ],
}
SQUEUE_JSON_24_11 = {
    "meta": {"slurm": {"version": {"major": "24", "micro": "1", "minor": "11"}, "release": "24.11.1"}},
    "errors": [],
    "warnings": [],
    "jobs": [
        {"job_id": 301, "name": "pairio-a", "job_state": ["PENDING"], "state_reason": "Resources",
         "exit_code": {"status": ["PENDING"], "return_code": {"set": False, "infinite": False, "number": 0}}},
        {"job_id": 302, "name": "pairio-b", "job_state": ["RUNNING"], "state_reason": "None"},
        {"job_id": 303, "name": "pairio-c", "job_state": ["COMPLETED", "COMPLETING"], "state_reason": "None"},
        {"job_id": 304, "name": "pairio-d", "job_state": ["CANCELLED"], "state_reason": "None"},
    ],
}


def test_parse_squeue_json_22_05_state_strings() -> None:
    assert parse_squeue_json(json.dumps(SQUEUE_JSON_22_05)) == {
        "201": ("PENDING", "Priority"),
        "202": ("RUNNING", None),
        "203": ("TIMEOUT", "TimeLimit"),
    }


def test_parse_squeue_json_24_11_state_lists() -> None:
    jobs = parse_squeue_json(json.dumps(SQUEUE_JSON_24_11))
    assert jobs == {
        "301": ("PENDING", "Resources"),
        "302": ("RUNNING", None),
        "303": ("COMPLETING", None),  # not settled while Slurm still completes it
        "304": ("CANCELLED", None),
    }
    assert outcome_from_slurm(*jobs["303"]).phase is NativePhase.RUNNING


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"jobs": 3}', '{"jobs": [{"job_id": 1}]}', '{"jobs": [{"job_id": 1, "job_state": 5}]}']
)
def test_parse_squeue_json_refuses_garbage(text: str) -> None:
    with pytest.raises(SlurmOutputError, match="squeue --json"):
        parse_squeue_json(text)


def test_parse_sacct() -> None:
    text = (
        "401|COMPLETED|0:0|None\n"
        "401.batch|COMPLETED|0:0|\n"
        "401.extern|COMPLETED|0:0|\n"
        "402|FAILED|3:0|NonZeroExitCode\n"
        "402.batch|FAILED|3:0|\n"
        "403|CANCELLED by 1000|0:15|None\n"
        "404|OUT_OF_MEMORY|0:125|OutOfMemory\n"
    )
    jobs = parse_sacct(text)
    assert jobs == {
        "401": ("COMPLETED", "0:0", None),
        "402": ("FAILED", "3:0", "NonZeroExitCode"),
        "403": ("CANCELLED by 1000", "0:15", None),
        "404": ("OUT_OF_MEMORY", "0:125", "OutOfMemory"),
    }
    assert outcome_from_slurm(*jobs["402"]).exit_code == 3
    assert "by 1000" in outcome_from_slurm(*jobs["403"]).error


@pytest.mark.parametrize("text", ["401|COMPLETED|0:0", "401|COMPLETED|zero|None", "sacct: error: Problem talking to the database"])
def test_parse_sacct_refuses_garbage(text: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_sacct(text)
