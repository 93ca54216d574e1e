"""Pure parts of the watcher and the local backend: no processes started."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from bridge.backend import Capacity, NativePhase
from bridge.local.backend import NativeId, last_sampled_rss, read_watcher_result
from bridge.local.load import CpuReading, window_load
from bridge.local.resources import (
    DeclaredLimits,
    JobReservation,
    MachineSnapshot,
    busy_reason,
    choose_gpus,
    detect_gpu_ids,
    free_capacity,
    inherited_environment,
    local_directives,
    parse_cuda_visible_devices,
    parse_nvidia_smi_list,
)
from bridge.watch import (
    Result,
    container_environment,
    digest_or_none,
    exit_error,
    image_missing_error,
    job_environment,
    memory_limit_error,
    parse_args,
    parse_gpu_query,
    resource_environment,
    tail_text,
    time_limit_error,
    write_env_file,
    write_json_atomically,
)
from pairio.models import PairioJobRequiredResources

# ---------------------------------------------------------------- resources -> directives


def test_local_directives_map_every_resource() -> None:
    resources = PairioJobRequiredResources(numCpus=4, numGpus=2, memoryGb=1.5, timeSec=90)
    args, env = local_directives(resources, ["0", "3"])
    assert args == ["--time-sec", "90", "--memory-gb", "1.5", "--num-cpus", "4", "--gpus", "0,3"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["NUMEXPR_NUM_THREADS"] == "4"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,3"


def test_local_directives_without_gpus_hide_them_all() -> None:
    args, env = local_directives(PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=2, timeSec=3600), [])
    assert "--gpus" not in args
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_local_directives_refuse_the_wrong_number_of_gpus() -> None:
    with pytest.raises(ValueError, match="asks for 2 GPUs but 1 were assigned"):
        local_directives(PairioJobRequiredResources(numCpus=1, numGpus=2, memoryGb=1, timeSec=1), ["0"])


def test_job_environment_points_at_the_job_file_and_overrides_the_bridge() -> None:
    env = job_environment({"PATH": "/bin", "OMP_NUM_THREADS": "64", "CUDA_VISIBLE_DEVICES": "0,1"}, Path("/jobs/j1"), 2, [])
    assert env["PAIRIO_JOB_FILE"] == "/jobs/j1/job.json"
    assert env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert resource_environment(3, ["GPU-abc"])["CUDA_VISIBLE_DEVICES"] == "GPU-abc"


def test_watcher_command_line() -> None:
    config = parse_args(["--job-dir", "/tmp/j", "--time-sec", "2", "--memory-gb", "0.5", "--num-cpus", "1", "--gpus", "1,2",
                         "--", "python", "-c", "print(1)", "--time-sec"])  # fmt: skip
    assert config.command == ["python", "-c", "print(1)", "--time-sec"]
    assert (config.time_sec, config.memory_gb, config.num_cpus, config.gpu_ids) == (2.0, 0.5, 1, ["1", "2"])
    with pytest.raises(SystemExit):
        parse_args(["--job-dir", "/tmp/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--"])


def test_jobs_do_not_inherit_the_bridges_pairio_settings() -> None:
    env = inherited_environment({"PATH": "/bin", "PAIRIO_API_KEY": "secret", "PAIRIO_HUB_DATABASE_URL": "postgresql://u:p@h/db"})
    assert env == {"PATH": "/bin"}


# ---------------------------------------------------------------- GPUs


@pytest.mark.parametrize(
    "value, expected",
    [("0,1", ["0", "1"]), ("", []), ("-1", []), (" 2 , GPU-4f2e ", ["2", "GPU-4f2e"]), ("NoDevFiles", [])],
)
def test_parse_cuda_visible_devices(value: str, expected: list[str]) -> None:
    assert parse_cuda_visible_devices(value) == expected


def test_parse_nvidia_smi_list() -> None:
    text = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d1c1f0e-aaaa)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-5d1c1f0e-bbbb)\n"
        "  MIG 1g.10gb Device 0: (UUID: MIG-xyz)\n"
    )
    assert parse_nvidia_smi_list(text) == ["0", "1"]


def test_cuda_visible_devices_wins_over_nvidia_smi() -> None:
    assert detect_gpu_ids({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert detect_gpu_ids({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_choose_gpus_never_hands_out_a_taken_one() -> None:
    assert choose_gpus(["0", "1", "2"], {"0"}, 2) == ["1", "2"]
    assert choose_gpus(["0", "1"], {"1"}, 2) is None
    assert choose_gpus([], set(), 0) == []


def test_parse_gpu_query_skips_unreadable_rows() -> None:
    rows = parse_gpu_query("0, 37, 1024\n1, [N/A], [N/A]\n")
    assert rows == [{"index": "0", "utilizationPercent": 37.0, "memoryUsedBytes": 1024 * 1024 * 1024}]


# ---------------------------------------------------------------- capacity

IDLE_MACHINE = MachineSnapshot(cpu_count=16, busy_cpus=0.0, available_memory_gb=64.0, gpu_ids=("0", "1"))


def test_free_capacity_of_an_idle_machine_is_all_of_it() -> None:
    assert free_capacity(IDLE_MACHINE, [], DeclaredLimits()) == Capacity(numCpus=16, numGpus=2, memoryGb=64.0)


def test_running_jobs_reserve_what_they_asked_for() -> None:
    running = [JobReservation(num_cpus=4, memory_gb=10, gpu_ids=("1",)), JobReservation(num_cpus=2, memory_gb=6, gpu_ids=())]
    assert free_capacity(IDLE_MACHINE, running, DeclaredLimits()) == Capacity(numCpus=10, numGpus=1, memoryGb=48.0)


def test_declared_limits_cap_the_machine() -> None:
    running = [JobReservation(num_cpus=2, memory_gb=3, gpu_ids=("0",))]
    declared = DeclaredLimits(num_cpus=4, num_gpus=1, memory_gb=8)
    assert free_capacity(IDLE_MACHINE, running, declared) == Capacity(numCpus=2, numGpus=0, memoryGb=5.0)


def test_our_own_load_and_memory_are_not_counted_twice() -> None:
    # The job keeps its 4 reserved CPUs busy and already uses 8 of its 10 GB.
    machine = MachineSnapshot(cpu_count=16, busy_cpus=4.0, available_memory_gb=56.0, gpu_ids=())
    running = [JobReservation(num_cpus=4, memory_gb=10, gpu_ids=(), used_memory_gb=8)]
    assert free_capacity(machine, running, DeclaredLimits()) == Capacity(numCpus=12, numGpus=0, memoryGb=54.0)


def test_load_from_other_programs_takes_cpus() -> None:
    machine = MachineSnapshot(cpu_count=16, busy_cpus=10.2, available_memory_gb=64.0, gpu_ids=())
    running = [JobReservation(num_cpus=4, memory_gb=1, gpu_ids=())]
    assert free_capacity(machine, running, DeclaredLimits()).numCpus == 6


def test_free_capacity_is_never_negative() -> None:
    running = [JobReservation(num_cpus=32, memory_gb=100, gpu_ids=("0", "1"))]
    assert free_capacity(IDLE_MACHINE, running, DeclaredLimits(num_gpus=1)) == Capacity(numCpus=0, numGpus=0, memoryGb=0.0)


# ---------------------------------------------------------------- errors


def test_limit_errors_say_what_happened() -> None:
    assert time_limit_error(2.0) == "processor exceeded its time limit of 2 s and was killed"
    assert time_limit_error(1.5) == "processor exceeded its time limit of 1.5 s and was killed"
    assert memory_limit_error(3 * 1024**3 // 2, 1) == "processor used 1.50 GB, over its memory limit of 1 GB, and was killed"


def test_exit_errors_carry_the_code_or_signal_and_the_console_tail() -> None:
    assert exit_error(3, "") == "processor exited with code 3"
    assert (
        exit_error(2, "Traceback...\nValueError: bad")
        == "processor exited with code 2; the last lines of its output:\nTraceback...\nValueError: bad"
    )
    assert exit_error(-signal.SIGKILL, "") == "processor was killed by SIGKILL (9)"


def test_tail_text_keeps_the_last_lines_within_bounds() -> None:
    data = "".join(f"line {i}\n" for i in range(100)).encode()
    assert tail_text(data, max_lines=3) == "line 97\nline 98\nline 99"
    assert len(tail_text(b"x" * 10_000, max_chars=500)) == 500
    assert tail_text(b"caf\xc3") == "caf\ufffd"


# ---------------------------------------------------------------- job directory files


def test_native_id_round_trips_paths_with_colons() -> None:
    native_id = NativeId(1234, 1795579300.05, Path("/data/jobs:old/abc"))
    assert NativeId.parse(str(native_id)) == native_id
    for garbage in ["", "abc", "12:x:/a", "12:1.0:relative/dir"]:
        with pytest.raises(ValueError):
            NativeId.parse(garbage)


def test_read_watcher_result(tmp_path: Path) -> None:
    assert read_watcher_result(tmp_path) is None
    write_json_atomically(
        tmp_path / "result.json",
        {"exitCode": 3, "phase": "failed", "error": "processor exited with code 3", "timestampFinishedSec": 1.0},
    )
    outcome = read_watcher_result(tmp_path)
    assert outcome is not None and (outcome.phase, outcome.exit_code, outcome.error) == (
        NativePhase.FAILED,
        3,
        "processor exited with code 3",
    )
    (tmp_path / "result.json").write_text('{"phase": "exploded"}')
    outcome = read_watcher_result(tmp_path)
    assert outcome is not None and outcome.phase == NativePhase.LOST and "exploded" in (outcome.error or "")


def test_last_sampled_rss_tolerates_a_half_written_line(tmp_path: Path) -> None:
    assert last_sampled_rss(tmp_path) == 0
    lines = [json.dumps({"timestampSec": i, "rssBytes": 1000 + i}) for i in range(500)]
    (tmp_path / "resource_log.jsonl").write_text("\n".join(lines) + '\n{"timestampSec": 5, "rssB')
    assert last_sampled_rss(tmp_path) == 1499


@pytest.mark.parametrize("with_cancel_file", [True, False])
def test_a_signal_from_outside_is_not_called_a_cancel(tmp_path: Path, with_cancel_file: bool) -> None:
    """SIGTERM with the bridge's cancel file is a cancel; without it (Slurm's time limit, an administrator) it says so."""
    import signal
    import subprocess
    import sys
    import time

    job_dir = tmp_path / "job"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "job.json").write_text("{}")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "bridge.watch", "--job-dir", str(job_dir), "--time-sec", "1200", "--memory-gb", "1",
         "--num-cpus", "1", "--kill-grace-sec", "0.5", "--", sys.executable, "-c", "import time; time.sleep(600)"],
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (job_dir / "watcher.json").exists():
        assert time.monotonic() < deadline, "the watcher did not start"
        time.sleep(0.05)
    if with_cancel_file:
        (job_dir / "cancel").touch()
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=60) == 0  # the job would run 600 s: the signal ended it
    result = json.loads((job_dir / "result.json").read_text())
    assert result["phase"] == "failed"
    if with_cancel_file:
        assert result["error"] == "canceled"
    else:
        assert result["error"].startswith("stopped by SIGTERM from outside Pairio"), result


# ---------------------------------------------------------------- secrets and the processor's environment (issue 10)


def test_the_processor_environment_is_an_allow_list_plus_pass_env_secrets_and_pairios_settings() -> None:
    from bridge.watch import job_environment as build

    watcher_env = {
        "PATH": "/bin", "HOME": "/home/op", "LC_ALL": "C.UTF-8", "TZ": "UTC", "AWS_SECRET_ACCESS_KEY": "op-aws",
        "GITHUB_TOKEN": "op-gh", "LAB_DATA": "/data", "LAB_CACHE": "/cache", "PAIRIO_API_KEY": "op-key",
        "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so", "BASH_ENV": "/evil.sh", "OMP_NUM_THREADS": "64",
    }  # fmt: skip
    env = build(watcher_env, Path("/jobs/j1"), 2, [], pass_env=["LAB_*", "PAIRIO_API_KEY"], secrets={"TOKEN": "t0ken"}, job_id="j1")
    assert env == {
        "PATH": "/bin", "HOME": "/home/op", "LC_ALL": "C.UTF-8", "TZ": "UTC", "LAB_DATA": "/data", "LAB_CACHE": "/cache",
        "TOKEN": "t0ken", **resource_environment(2, []), "PAIRIO_JOB_FILE": "/jobs/j1/job.json", "PAIRIO_JOB_ID": "j1",
    }  # fmt: skip


def test_the_secrets_file_is_private_from_its_first_byte_and_taken_once(tmp_path: Path) -> None:
    from bridge.watch import SECRETS_FILE, take_secrets, write_secrets_file

    (tmp_path / SECRETS_FILE).write_text("left by an earlier attempt")
    path = write_secrets_file(tmp_path, {"TOKEN": "t0ken", "OTHER": "x"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert take_secrets(tmp_path) == {"TOKEN": "t0ken", "OTHER": "x"}
    assert not path.exists() and take_secrets(tmp_path) is None
    path.write_text('["not", "a", "mapping"]')
    with pytest.raises(ValueError, match="does not map secret names"):
        take_secrets(tmp_path)
    assert not path.exists()


@pytest.mark.parametrize("with_secrets", [True, False])
def test_only_a_job_with_secrets_has_its_output_piped_through_the_masking(tmp_path: Path, with_secrets: bool) -> None:
    """With secrets the processor writes into the watcher's pipe, which masks them; without, into console.txt itself."""
    import subprocess
    import sys

    from bridge.watch import write_secrets_file

    job_dir = tmp_path / "job"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "job.json").write_text("{}")
    flags: list[str] = []
    if with_secrets:
        write_secrets_file(job_dir, {"TOKEN": "t0ken-value"})
        flags = ["--secrets"]
    processor = (
        "import os, stat; kind = 'pipe' if stat.S_ISFIFO(os.fstat(1).st_mode) else 'file'; "
        "print(kind, os.environ.get('TOKEN', 'no-token'), flush=True)"
    )
    watcher = subprocess.run(
        [sys.executable, "-m", "bridge.watch", "--job-dir", str(job_dir), "--time-sec", "600", "--memory-gb", "1",
         "--num-cpus", "1", *flags, "--", sys.executable, "-c", processor],
        timeout=120, check=False,
    )  # fmt: skip
    assert watcher.returncode == 0
    assert json.loads((job_dir / "result.json").read_text())["phase"] == "succeeded"
    console = (job_dir / "console.txt").read_text()
    assert console == ("pipe ***\n" if with_secrets else "file no-token\n"), console


def test_watcher_options_for_pass_env_and_secrets() -> None:
    config = parse_args(["--job-dir", "/tmp/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1",
                         "--pass-env=LAB_*", "--pass-env", "SCRATCH", "--secrets", "--", "true"])  # fmt: skip
    assert config.pass_env == ["LAB_*", "SCRATCH"] and config.expect_secrets and config.command == ["true"]


def test_busy_reason_holds_a_job_only_while_other_programs_leave_it_no_cpu() -> None:
    loaded = MachineSnapshot(cpu_count=2, busy_cpus=2.0, available_memory_gb=8.0, gpu_ids=())
    assert busy_reason(loaded, [], 1, 4.8) == "the host is busy, load 4.8 on 2 CPUs"
    half = MachineSnapshot(cpu_count=2, busy_cpus=1.0, available_memory_gb=8.0, gpu_ids=())
    assert busy_reason(half, [], 1, 1.0) is None
    assert busy_reason(half, [], 2, 1.0) is not None
    # the busy CPU is our own job's: the other one is free
    ours = [JobReservation(num_cpus=1, memory_gb=1.0, gpu_ids=())]
    assert busy_reason(half, ours, 1, 1.0) is None


def test_busy_reason_does_not_count_the_bridges_own_work_as_other_programs_load() -> None:
    ours = [JobReservation(num_cpus=1, memory_gb=1.0, gpu_ids=())]
    # both CPUs busy, but 1.8 of them are our job, the bridge and its watchers: the second slot is free
    own = MachineSnapshot(cpu_count=2, busy_cpus=2.0, available_memory_gb=8.0, gpu_ids=(), own_busy_cpus=1.8)
    assert busy_reason(own, ours, 1, 2.0) is None
    # the same load from other programs holds the job
    foreign = MachineSnapshot(cpu_count=2, busy_cpus=2.0, available_memory_gb=8.0, gpu_ids=(), own_busy_cpus=0.1)
    assert busy_reason(foreign, ours, 1, 2.0) == "the host is busy, load 2.0 on 2 CPUs; other programs use 1.9 of them"
    # our job idles, but other programs take the CPU it does not use and the free one
    idle_job = MachineSnapshot(cpu_count=2, busy_cpus=1.6, available_memory_gb=8.0, gpu_ids=(), own_busy_cpus=0.0)
    assert busy_reason(idle_job, ours, 1, 1.6) is not None


def test_window_load_splits_the_hosts_busy_cpus_from_the_bridges_own() -> None:
    first = CpuReading(at=10.0, busy_sec=100.0, total_sec=400.0, own_sec=5.0)
    second = CpuReading(at=12.0, busy_sec=103.0, total_sec=404.0, own_sec=6.0)  # 2 s on 2 CPUs, 3 of 4 CPU-seconds busy
    load = window_load(first, second, usable_cpus=2)
    assert load.busy_cpus == 1.5 and load.own_cpus == 0.5
    assert window_load(second, second, usable_cpus=2).busy_cpus == 0.0



# ---------------------------------------------------------------- container mode


def test_container_environment_leaves_the_hosts_paths_out() -> None:
    env = container_environment({"PATH": "/usr/bin", "HOME": "/root", "TMPDIR": "/var/tmp", "USER": "op", "TOKEN": "t", "OMP_NUM_THREADS": "2"})
    assert env == {"TOKEN": "t", "OMP_NUM_THREADS": "2", "TMPDIR": "/tmp", "CUDA_VISIBLE_DEVICES": ""}  # the image's PATH and HOME hold; no GPU


def test_env_file_is_private_and_refuses_line_breaks(tmp_path: Path) -> None:
    path = write_env_file(tmp_path / "container.env", {"A": "1", "B": "x=y z"})
    assert path.read_text() == "A=1\nB=x=y z\n"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="line break"):
        write_env_file(tmp_path / "container.env", {"KEY": "-----BEGIN\nEND-----"})


def test_image_missing_error_says_how_to_fix_it() -> None:
    message = image_missing_error("ghcr.io/x/app:1", "podman", "Error: ghcr.io/x/app:1: image not known", host="node7")
    assert message.startswith("image ghcr.io/x/app:1 not found by podman on node7: pull it there ('podman pull ghcr.io/x/app:1') or allow pulls")
    assert "--pull-policy" in message


def test_digest_or_none_takes_only_what_an_engine_prints_for_a_digest() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    assert digest_or_none(digest + "\n") == digest
    assert digest_or_none("<no value>") is None and digest_or_none("") is None
    assert digest_or_none("Error: no such container pairio-J") is None and digest_or_none("sha256:XYZ") is None


def test_the_image_digest_travels_in_result_json(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    write_json_atomically(tmp_path / "result.json", Result("succeeded", 0, None, image_digest=digest).as_json())
    outcome = read_watcher_result(tmp_path)
    assert outcome is not None and outcome.phase == NativePhase.SUCCEEDED and outcome.image_digest == digest
    assert "imageDigest" not in Result("failed", None, "x").as_json()  # native runs have none


def test_parse_args_container_options() -> None:
    base = ["--job-dir", "/tmp/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1"]
    config = parse_args([*base, "--container-engine", "podman", "--container-name", "pairio-J", "--container-image", "img", "--", "podman", "create"])
    assert (config.container_engine, config.container_name, config.container_image) == ("podman", "pairio-J", "img")
    assert parse_args([*base, "--container-engine", "apptainer", "--", "apptainer", "exec"]).container_engine == "apptainer"
    with pytest.raises(SystemExit):
        parse_args([*base, "--container-engine", "docker", "--", "docker", "create"])  # a name is needed to follow it


# ---------------------------------------------------------------- the watcher's JSON and command line, by hand


JSON_SAMPLES: list[object] = [
    {"exitCode": 0, "phase": "succeeded", "error": None, "timestampFinishedSec": 1796553250.4262605},
    {"cpuPercent": 12.5, "rssBytes": 2**40, "numProcesses": 3, "gpus": [{"index": "0", "utilizationPercent": 1e-7}]},
    {"quotes \" and \\ back": "tab\t nl\n cr\r bell\x07 del\x7f nul\x00 \b \f"},
    {"unicode": "Grüße — ✓ 𝄞 emoji 🎉", "surrogate": "bad \udcff byte"},
    {"empty": {}, "list": [], "nested": [[1, 2.0, -3], {"a": [True, False, None]}], "big": -(10**30)},
    {"floats": [0.1, -0.0, 1e300, 5e-324, float("inf"), float("-inf")]},
    ["a", 1, None],
    "just a string",
]


@pytest.mark.parametrize("value", JSON_SAMPLES)
def test_the_watchers_json_is_what_json_dumps_writes(value: object) -> None:
    from bridge.watch import json_text

    assert json_text(value) == json.dumps(value)
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_the_watchers_json_refuses_what_json_cannot_hold() -> None:
    from bridge.watch import json_text

    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"path": Path("/tmp")})
    with pytest.raises(TypeError, match="keys must be str"):
        json_text({1: "x"})


def test_every_character_survives_the_watchers_json() -> None:
    from bridge.watch import json_text

    text = "".join(chr(code) for code in range(0, 0x3000)) + "".join(chr(code) for code in range(0xD800, 0xE100)) + "\U0010ffff"
    assert json_text(text) == json.dumps(text)


def test_watcher_options_with_equals_signs_job_id_and_defaults() -> None:
    from bridge.watch import DEFAULT_KILL_GRACE_SEC

    config = parse_args(["--job-dir=/tmp/j/../j", "--job-id", "J1", "--time-sec=2.5", "--memory-gb", "1", "--num-cpus=3",
                         "--job-env", "A=1=2", "--job-env=B=", "python", "main.py", "--secrets"])  # fmt: skip
    assert config.job_dir == "/tmp/j" and config.job_id == "J1"
    assert (config.time_sec, config.num_cpus, config.kill_grace_sec) == (2.5, 3, DEFAULT_KILL_GRACE_SEC)
    assert config.job_env == {"A": "1=2", "B": ""}
    assert config.command == ["python", "main.py", "--secrets"]  # the processor's own, after its first word
    assert not config.expect_secrets and config.gpu_ids == [] and config.pass_env == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--", "true"], "required: --job-dir"),
        (["--job-dir", "/j", "--time-sec", "soon", "--memory-gb", "1", "--num-cpus", "1", "--", "true"], "--time-sec: not a number: 'soon'"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1.5", "--", "true"], "--num-cpus: not a number"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--bogus", "--", "true"], "unrecognized argument: --bogus"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--container-engine", "lxc", "--", "x"], "'lxc' is not one of podman"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--secrets=yes", "--", "x"], "--secrets takes no value"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus"], "--num-cpus needs a value"),
        (["--job-dir", "/j", "--time-sec", "2", "--memory-gb", "1", "--num-cpus", "1", "--job-env", "NOVALUE", "--", "x"], "NAME=VALUE"),
    ],
)
def test_a_bad_watcher_command_line_exits_2_saying_what_is_wrong(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bridge.watch --job-dir DIR") and message in err, err


def test_the_watchers_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.watch import OPTIONS

    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in OPTIONS) and "{podman,docker,apptainer}" in out and "(required)" in out
