"""``mammo data import``: bring REAL data sets (CBIS-DDSM, MIAS) into the tile contract.

Training tiles go to ``--out`` (default: the landing folder of the settings), held-out tiles
to ``--test-out`` (default: the fixed test folder), the JSON report to ``--report`` (default
``<test-out>/<name>_import_report.json``; never into landing, where validation would take it
for a data file). Skipped rows are printed as warning lines; the command fails (exit 1, one
line) only when nothing could be imported, or on the first skipped row with ``--strict``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import_app = typer.Typer(
    help="Import REAL data sets (CBIS-DDSM, MIAS) as contract tiles.", no_args_is_help=True
)

_Out = Annotated[
    Path | None, typer.Option(help="training tfrecords folder [default: settings landing]")
]
_TestOut = Annotated[
    Path | None, typer.Option(help="held-out numpy split folder [default: settings test]")
]
_Report = Annotated[Path | None, typer.Option(help="import report JSON file")]
_FilmsOut = Annotated[
    Path | None,
    typer.Option(
        help="where the held-out patients' whole films are kept as a film set, for film-level "
        "evaluation [default: the settings' film test folder, or test_films beside --test-out]"
    ),
]
_NoFilms = Annotated[bool, typer.Option("--no-films", help="do not keep whole films")]
_ValidationFilms = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=0.5,
        help="share of training patients held out of training, whose films choose the "
        "film-level threshold (0: none; the threshold is then derived from the tile one)",
    ),
]
_Normals = Annotated[int, typer.Option(min=0, help="normal (label 0) tiles per image")]
_Seed = Annotated[int, typer.Option(help="seed of normal-tile positions (and MIAS split)")]
_Strict = Annotated[bool, typer.Option(help="fail (writing nothing) on any skipped row")]
_Overwrite = Annotated[bool, typer.Option(help="replace outputs of an earlier import")]
_Progress = Annotated[bool, typer.Option(help="show a progress bar")]


def _warn(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _targets(out: Path | None, test_out: Path | None) -> tuple[Path, Path]:
    from mammo_pipeline.config import get_settings

    settings = get_settings()
    return out or settings.landing, test_out or settings.test_split


def _films_target(films_out: Path | None, no_films: bool, test_out: Path) -> Path | None:
    """Where the whole films go: ``--films-out``, else the settings' film test folder, or
    beside an explicit ``--test-out`` (``<parent>/test_films``, as the defaults are)."""
    from mammo_pipeline.config import get_settings

    if no_films:
        return None
    settings = get_settings()
    if films_out is not None:
        return films_out
    if test_out == settings.test_split:
        return settings.film_test_split
    return test_out.parent / settings.film_test_split.name


def _print_result(result) -> None:
    for line in result.summary_lines():
        typer.echo(line)
    for path in result.outputs.train_files:
        typer.echo(f"REAL training tiles: {path}")
    if result.outputs.test_data:
        typer.echo(f"REAL held-out split: {result.outputs.test_data}, {result.outputs.test_labels}")
    typer.echo(f"import report: {result.outputs.report}")


@import_app.command("cbis-ddsm")
def cbis_ddsm(
    csv_dir: Annotated[Path, typer.Option(help="folder of the four description CSVs")],
    dicom_root: Annotated[Path, typer.Option(help="folder the CSV file paths are relative to")],
    out: _Out = None,
    test_out: _TestOut = None,
    normals_per_image: _Normals = 2,
    seed: _Seed = 0,
    default_spacing_mm: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="pixel size (mm) of DICOMs without PixelSpacing (default: the importer's, "
            "CBIS-DDSM's scanning resolution)",
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="prefix of the output files")] = "cbis_ddsm",
    report: _Report = None,
    films_out: _FilmsOut = None,
    no_films: _NoFilms = False,
    validation_films: _ValidationFilms = 0.0,
    strict: _Strict = False,
    overwrite: _Overwrite = False,
    progress: _Progress = True,
) -> None:
    """Import REAL CBIS-DDSM (official CSV + DICOM layout), keeping the official split."""
    from mammo_pipeline.data.importers.cbis_ddsm import import_cbis_ddsm

    out, test_out = _targets(out, test_out)
    typer.echo(
        f"Importing REAL data (not synthetic): CBIS-DDSM from {csv_dir} and {dicom_root}, "
        f"{normals_per_image} normal tile(s) per image, seed {seed}"
    )
    result = import_cbis_ddsm(
        csv_dir,
        dicom_root,
        out,
        test_out,
        normals_per_image=normals_per_image,
        seed=seed,
        **({} if default_spacing_mm is None else {"default_spacing_mm": default_spacing_mm}),
        report_path=report,
        films_out=_films_target(films_out, no_films, test_out),
        validation_films=validation_films,
        name=name,
        strict=strict,
        overwrite=overwrite,
        progress=progress,
        warn=_warn,
    )
    _print_result(result)


@import_app.command("mias")
def mias(
    info: Annotated[Path, typer.Option(help="the MIAS Info.txt")],
    films: Annotated[Path, typer.Option(help="folder of the mdbNNN.pgm films")],
    out: _Out = None,
    test_out: _TestOut = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of patients held out")
    ] = 0.2,
    normals_per_image: _Normals = 2,
    seed: _Seed = 0,
    pixel_spacing_mm: Annotated[
        float | None,
        typer.Option(min=0.001, help="film pixel size in mm (default: MIAS's, 200 um)"),
    ] = None,
    name: Annotated[str, typer.Option(help="prefix of the output files")] = "mias",
    report: _Report = None,
    films_out: _FilmsOut = None,
    no_films: _NoFilms = False,
    validation_films: _ValidationFilms = 0.0,
    strict: _Strict = False,
    overwrite: _Overwrite = False,
    progress: _Progress = True,
) -> None:
    """Import REAL MIAS films (PGM + Info.txt), split by patient."""
    from mammo_pipeline.data.importers.mias import import_mias

    out, test_out = _targets(out, test_out)
    typer.echo(
        f"Importing REAL data (not synthetic): MIAS from {info} and {films}, "
        f"test fraction {test_fraction}, {normals_per_image} normal tile(s) per film, seed {seed}"
    )
    result = import_mias(
        info,
        films,
        out,
        test_out,
        test_fraction=test_fraction,
        seed=seed,
        normals_per_image=normals_per_image,
        **({} if pixel_spacing_mm is None else {"pixel_spacing_mm": pixel_spacing_mm}),
        report_path=report,
        films_out=_films_target(films_out, no_films, test_out),
        validation_films=validation_films,
        name=name,
        strict=strict,
        overwrite=overwrite,
        progress=progress,
        warn=_warn,
    )
    _print_result(result)
