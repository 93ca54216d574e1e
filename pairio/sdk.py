"""The app SDK under the import path the original Pairio apps use (``from pairio.sdk import App, ...``)."""

from .app import App, InputFile, OutputFile, ProcessorBase

__all__ = ["App", "InputFile", "OutputFile", "ProcessorBase"]
