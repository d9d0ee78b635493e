"""``mammo validate``: validate every file in the landing directory with Great Expectations.

Passing files move to ``validated/``, failing ones to ``quarantine/`` beside a
``<file>.reason.json``. Prints one line per file, totals, drift and the Data Docs location.
The exit code is 0 whenever validation ran (quarantines included) and 1 when it could not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def validate(
    landing: Annotated[
        Path | None, typer.Option(help="directory of new tfrecords (default: <data>/landing)")
    ] = None,
    validated: Annotated[
        Path | None, typer.Option(help="where passing files go (default: <data>/validated)")
    ] = None,
    quarantine: Annotated[
        Path | None, typer.Option(help="where failing files go (default: <data>/quarantine)")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="write the full result as JSON to this file")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="per-file progress bars")
    ] = None,
) -> None:
    """Validate the landing directory: per-file verdicts, quarantine, Data Docs, drift."""
    from mammo_pipeline.config import get_settings
    from mammo_pipeline.validation.run import validate_landing

    show_progress = sys.stderr.isatty() if progress is None else progress
    result = validate_landing(
        get_settings(),
        landing=landing,
        validated=validated,
        quarantine=quarantine,
        report=report,
        progress=show_progress,
    )
    for line in result.summary_lines():
        typer.echo(line)
    for f in result.files:
        if f.reason_file:
            typer.echo(f"  {f.file}: reasons in {f.reason_file}")
    if result.errors:  # a file could not be validated (it stays in landing, intact)
        typer.secho(
            f"error: {result.errors} file(s) could not be validated; they stay in landing",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level `mammo` app."""
    app.command(name="validate")(validate)
