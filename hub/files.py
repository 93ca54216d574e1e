"""Job files on disk: console output, output files, resource logs.

Paths are built only from job ids (checked here) and validated names, so no
request can reach outside the files directory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9]{1,40}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


class JobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID_RE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / "jobs" / job_id[:2] / job_id

    def console_output_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "console_output.txt"

    def resource_log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "resource_utilization_log.jsonl"

    def output_path(self, job_id: str, output_name: str) -> Path:
        if not _NAME_RE.match(output_name) or ".." in output_name:
            raise ValueError(f"not an output name: {output_name!r}")
        return self.job_dir(job_id) / "outputs" / output_name

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
