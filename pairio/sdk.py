"""The app SDK under the import path the original Pairio apps use.

    from pairio.sdk import App, ProcessorBase, InputFile, OutputFile, BaseModel, Field

``BaseModel`` and ``Field`` are pydantic's own, re-exported as the original SDK does.
"""

from pydantic import BaseModel, Field

from .additional_outputs import upload_additional_job_output
from .app import App, InputFile, OutputFile, ProcessorBase

__all__ = ["App", "InputFile", "OutputFile", "ProcessorBase", "BaseModel", "Field", "upload_additional_job_output"]
