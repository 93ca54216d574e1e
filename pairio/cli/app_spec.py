"""``pairio make-app-spec``: run an app's ``main.py`` to get its spec, check it, and write ``spec.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import click
from pydantic import ValidationError

from pairio.app import APP_SPEC_OUTPUT_ENV
from pairio.jobfile import JOB_FILE_ENV
from pairio.models import PairioApp

MAIN_SCRIPT_TIMEOUT_SEC = 300


def generate_app_spec(app_dir: Path, timeout_sec: float = MAIN_SCRIPT_TIMEOUT_SEC) -> PairioApp:
    """Run ``app_dir/main.py`` with ``PAIRIO_APP_SPEC_OUTPUT`` set and return the spec it wrote, validated."""
    main_script = app_dir / "main.py"
    if not main_script.is_file():
        raise click.ClickException(
            f"{main_script} does not exist; --app-dir must be the folder holding the app's main.py (the one that calls app.run())"
        )
    with tempfile.TemporaryDirectory(prefix="pairio-app-spec-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        env = {k: v for k, v in os.environ.items() if k != JOB_FILE_ENV}
        env[APP_SPEC_OUTPUT_ENV] = str(spec_path)
        try:
            result = subprocess.run(
                [sys.executable, main_script.name],
                cwd=app_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_sec,
            )
        except subprocess.TimeoutExpired:
            raise click.ClickException(
                f"{main_script} did not finish within {timeout_sec:g} s; does it do work at import time instead of in app.run()?"
            ) from None
        if result.returncode != 0:
            raise click.ClickException(
                f"{main_script} failed with exit code {result.returncode}:\n{_tail(result.stderr or result.stdout)}"
            )
        if not spec_path.is_file():
            raise click.ClickException(
                f"{main_script} ran but wrote no spec; it must end with\n"
                "    if __name__ == '__main__':\n        app.run()"
            )
        text = spec_path.read_text()
    try:
        return PairioApp.model_validate_json(text)
    except ValidationError as e:
        raise click.ClickException(f"the spec {main_script} produced is not valid:\n{e}") from None


def format_app_spec(spec: PairioApp, indent: int = 2) -> str:
    """The spec as written to spec.json: pretty-printed, with a trailing newline."""
    return json.dumps(spec.model_dump(mode="json"), indent=indent) + "\n"


def _tail(text: str, max_lines: int = 30) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-max_lines:]) or "(no output)"


@click.command("make-app-spec")
@click.option(
    "--app-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the app's folder, holding main.py",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the spec [default: APP_DIR/spec.json]",
)
def make_app_spec(app_dir: Path, output: Optional[Path]) -> None:
    """Write an app's spec.json from the processors its main.py declares."""
    _write_app_spec(app_dir, output, indent=2)


@click.command("make-app-spec-file")
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the app's folder, holding main.py",
)
@click.option(
    "--spec-output-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the spec [default: APP_DIR/spec.json]",
)
def make_app_spec_file(app_dir: Path, spec_output_file: Optional[Path]) -> None:
    """The original Pairio's name and options for make-app-spec: write an app's spec.json."""
    # 4-space indented, like the original's files, so regenerating one changes only what changed.
    _write_app_spec(app_dir, spec_output_file, indent=4)


def _write_app_spec(app_dir: Path, output: Optional[Path], *, indent: int) -> None:
    spec = generate_app_spec(app_dir.resolve())
    output_path = output if output is not None else app_dir / "spec.json"
    output_path.write_text(format_app_spec(spec, indent=indent))
    processors = ", ".join(p.name for p in spec.processors) or "none"
    click.echo(f"wrote {output_path} (app {spec.name!r}, processors: {processors})")
