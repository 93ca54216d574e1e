"""A throw-away single-node Slurm cluster for the test session, on 127.0.0.1.

``SlurmLab`` writes its own slurm.conf into a fresh directory, starts munged (unless
one answers already), slurmctld and slurmd, waits for the node to be idle, and stops
what it started afterwards, except munged (machine-wide, perhaps shared). Clients reach it through ``SLURM_CONF``, which the
``slurm_cluster`` fixture sets for the whole session (bridges started by tests
inherit it). The packages come from scripts/ensure-test-packages.sh (run by the
test command); under CI=true a missing Slurm is an error, never a skip.

The node advertises more CPUs than the machine has (``SlurmdParameters=config_overrides``),
so that many small jobs run at once and tests measure the bridge, not the 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

ACCOUNTING_DB_USER = "pairio_slurm"
"""made by scripts/ensure-mariadb.sh: no password, may create databases named slurm_acct_*"""
NODE_CPUS = 8
NODE_MEMORY_MIB = 16384
MUNGE_SOCKET_DIR = Path("/run/munge")


def slurm_missing() -> Optional[str]:
    for program in ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel"):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            return f"{program} is not installed (run scripts/ensure-test-packages.sh as root)"
    if os.geteuid() != 0:
        return "the test cluster's daemons must be started as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slurm_version(env: dict[str, str]) -> tuple[int, int]:
    # slurmd -V needs no slurm.conf (sinfo --version does), so it answers before the cluster exists
    out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True, env=env, check=False).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


class SlurmLab:
    def __init__(self, root: Path, *, accounting: bool = False, min_job_age_sec: int = 300) -> None:
        """``accounting``: run slurmdbd on the MariaDB/MySQL server at 127.0.0.1:3306 (root, no password),
        in a database of its own, so that sacct works; ``min_job_age_sec``: how long squeue lists ended jobs."""
        self.root = root
        self.accounting = accounting
        self.min_job_age_sec = min_job_age_sec
        self.database = f"slurm_acct_{os.getpid()}_{abs(hash(str(root))) % 10**8}"
        self.dbd_port = _free_port()
        self.conf = root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.version = (0, 0)

    @classmethod
    def running(cls, conf: Path) -> "SlurmLab":
        """The cluster already running from ``conf`` (started elsewhere, e.g. by the ``slurm_cluster``
        fixture): for its commands (``command``, ``show_job``, ``version``); it is not started or stopped here."""
        lab = cls(conf.parent)
        lab.conf = conf
        lab.env = {**os.environ, "SLURM_CONF": str(conf)}
        lab.version = _slurm_version(lab.env)
        return lab

    # ------------------------------------------------------------ configuration

    def config_text(self) -> str:
        d = self.root
        lines = [
            "ClusterName=pairiotest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "SlurmdParameters=config_overrides",
            "EnforcePartLimits=ALL",
            "DefMemPerCPU=256",
            "ReturnToService=2",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd.log",
            *(
                ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                 f"AccountingStoragePort={self.dbd_port}"]
                if self.accounting else ["AccountingStorageType=accounting_storage/none"]
            ),
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={d}/jobcomp.log",
            "InactiveLimit=0",
            "KillWait=2",
            f"MinJobAge={self.min_job_age_sec}",
            "OverTimeLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "Waittime=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MIB} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "PartitionName=other Nodes=ALL Default=NO MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        (self.root / "spool").mkdir(parents=True, exist_ok=True)
        self.version = _slurm_version(self.env)
        self.conf.write_text(self.config_text())
        if self.version >= (24, 5):
            # slurmd 24.11 starts its cgroup plugin even with proctrack/linuxproc and task/none, and fails
            # where /sys/fs/cgroup is not mounted ("Unable to initialize cgroup plugin"); 24.05 can turn it off
            (self.root / "cgroup.conf").write_text("CgroupPlugin=disabled\n")
        self._ensure_munge()
        if self.accounting:
            self._start_slurmdbd()
        self._run(["slurmctld", "-f", str(self.conf)])
        self._run(["slurmd", "-f", str(self.conf), "-N", self.node])
        self.wait_idle(timeout_sec=60)

    def stop(self) -> None:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "slurmdbd.pid"):
            self._kill_from_pid_file(self.root / pid_file)
        if self.accounting:
            subprocess.run(["mysql", "-h", "127.0.0.1", "-u", ACCOUNTING_DB_USER, "-e", f"DROP DATABASE IF EXISTS {self.database}"],
                           capture_output=True, check=False)
        # munged stays: it is the machine's one authentication daemon, and another test session's
        # cluster that found it running may still be using it (killing it broke that session's Slurm calls)

    def _start_slurmdbd(self) -> None:
        dbd_conf = self.root / "slurmdbd.conf"  # next to slurm.conf, where slurmdbd and sacctmgr look for it
        dbd_conf.write_text("\n".join([
            "AuthType=auth/munge",
            f"DbdHost={self.node}",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            f"PidFile={self.root}/slurmdbd.pid",
            f"LogFile={self.root}/slurmdbd.log",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            "StoragePort=3306",
            f"StorageUser={ACCOUNTING_DB_USER}",
            f"StorageLoc={self.database}",
        ]) + "\n")
        dbd_conf.chmod(0o600)
        self._run(["slurmdbd"])
        deadline = time.monotonic() + 30
        while True:
            added = subprocess.run(["sacctmgr", "-i", "add", "cluster", "pairiotest"], capture_output=True, text=True,
                                   env=self.env, timeout=60, check=False)
            if added.returncode == 0 or "already exists" in added.stdout + added.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"slurmdbd did not answer sacctmgr: {added.stderr}{added.stdout}\n{self.logs()}")
            time.sleep(0.3)

    def wait_idle(self, timeout_sec: float) -> None:
        deadline = time.monotonic() + timeout_sec
        last = ""
        while time.monotonic() < deadline:
            result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env, check=False)
            last = (result.stdout + result.stderr).strip()
            if result.returncode == 0 and last.split() and all(s.startswith("idle") or s.startswith("mixed") for s in last.split()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the test Slurm cluster did not become idle in {timeout_sec} s (sinfo: {last!r}); logs:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmdbd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    # ------------------------------------------------------------ helpers for tests

    def command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited with {result.returncode}: {result.stderr}{result.stdout}")
        return result

    def show_job(self, slurm_job_id: str) -> dict[str, str]:
        """``scontrol show job -o ID`` as a dict of its KEY=VALUE fields."""
        text = self.command("scontrol", "show", "job", "-o", slurm_job_id).stdout
        fields: dict[str, str] = {}
        for match in re.finditer(r"(\S+?)=(.*?)(?=\s+\S+?=|$)", text.strip()):
            fields[match.group(1)] = match.group(2)
        if "TRES" not in fields and "ReqTRES" in fields:  # 24.11 prints ReqTRES/AllocTRES, 22.05 TRES
            fields["TRES"] = fields["ReqTRES"]
        return fields

    # ------------------------------------------------------------ internals

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}{result.stdout}\n{self.logs()}")

    def _munge_works(self) -> bool:
        if shutil.which("munge") is None:
            return (MUNGE_SOCKET_DIR / "munge.socket.2").exists()
        encode = subprocess.run(["munge", "-n"], capture_output=True, check=False)
        if encode.returncode != 0:
            return False
        decode = subprocess.run(["unmunge"], input=encode.stdout, capture_output=True, check=False)
        return decode.returncode == 0

    def _ensure_munge(self) -> None:
        if self._munge_works():
            return
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", str(MUNGE_SOCKET_DIR)], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self._munge_works():
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not start answering within 10 s")
            time.sleep(0.1)

    @staticmethod
    def _kill_from_pid_file(pid_file: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmLab]:
    """The session's Slurm cluster; SLURM_CONF points at it while it runs."""
    missing = slurm_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Slurm tests cannot run in CI: {missing}")
        pytest.skip(missing)
    lab = SlurmLab(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    try:
        lab.start()
    except Exception:
        lab.stop()
        raise
    os.environ["SLURM_CONF"] = str(lab.conf)
    try:
        yield lab
    finally:
        lab.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
