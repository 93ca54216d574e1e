"""``upload_additional_job_output``: the original SDK's call for files beyond a processor's declared outputs."""

from __future__ import annotations

import os


class AdditionalOutputsNotSupportedError(RuntimeError):
    """Our bridges collect only the outputs a processor declares."""


def upload_additional_job_output(local_file_name: str | os.PathLike[str], remote_fname: str) -> str:
    """Not available yet: raises, saying what to do instead.

    The original hub stored such files next to the job (``otherFileOutputs``); our bridges
    collect only declared outputs, so an app gets a clear error rather than a lost file.
    """
    raise AdditionalOutputsNotSupportedError(
        f"upload_additional_job_output({str(local_file_name)!r}, {remote_fname!r}): this hub's bridges collect only "
        "the outputs a processor declares; declare an OutputFile field for this file in the context model and "
        "call context.<output>.upload(path) instead"
    )
