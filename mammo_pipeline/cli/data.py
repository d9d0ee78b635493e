"""``mammo data``: make synthetic data and inspect data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mammo_pipeline.cli.data_import import import_app
from mammo_pipeline.errors import MammoError

app = typer.Typer(help="Synthetic data and data inspection.", no_args_is_help=True)
app.add_typer(import_app, name="import")  # mammo data import cbis-ddsm | mias


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="output directory")],
    n: Annotated[int, typer.Option(min=1, help="training records")] = 1000,
    files: Annotated[int, typer.Option(min=1, help="tfrecord files to split them over")] = 5,
    positive_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of positive (lesion) tiles")
    ] = 0.14,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 0,
    test_n: Annotated[int, typer.Option(min=0, help="held-out test tiles (numpy form)")] = 0,
    compress: Annotated[str, typer.Option(help="'none' or 'gzip'")] = "none",
    films: Annotated[
        int, typer.Option(min=0, help="SYNTHETIC whole films with lesion boxes (film set)")
    ] = 0,
    films_out: Annotated[
        Path | None,
        typer.Option(help="where the film set goes (default: the film_test_split setting)"),
    ] = None,
) -> None:
    """Write a SYNTHETIC data set in the exact public DDSM schema (and, with --films, a
    SYNTHETIC film set for film-level evaluation)."""
    from mammo_pipeline.data.synthetic import generate

    if compress.lower() not in ("none", "gzip"):
        raise MammoError(f"--compress must be 'none' or 'gzip', got {compress!r}")
    if files > n:
        raise MammoError(f"--files ({files}) cannot exceed --n ({n})")
    typer.echo(
        f"Generating SYNTHETIC data (not real mammograms): {n} training tiles in {files} "
        f"file(s), {test_n} test tiles, positive fraction {positive_fraction}, seed {seed}"
    )
    ds = generate(
        out,
        n,
        files=files,
        positive_fraction=positive_fraction,
        seed=seed,
        test_n=test_n,
        compression="GZIP" if compress.lower() == "gzip" else "",
        films=films,
        films_dir=films_out if films_out is not None or not films else _film_split(),
    )
    typer.echo(f"SYNTHETIC training files ({ds.train_records} records):")
    for f in ds.train_files:
        typer.echo(f"  {f}")
    counts = ", ".join(f"{k}={v}" for k, v in ds.train_label_counts.items())
    typer.echo(f"SYNTHETIC label counts: {counts}")
    if ds.test_data:
        typer.echo(f"SYNTHETIC test split ({ds.test_records}): {ds.test_data}, {ds.test_labels}")
    if ds.film_set:
        typer.echo(f"SYNTHETIC film set ({ds.films} films): {ds.film_set}")


def _not_tfrecord(summary: object) -> bool:
    """A file read as a tfrecord whose very first record is unreadable (a text file, an
    image...): one line says so, not a table of counts and a 'truncated header' problem."""
    return (
        getattr(summary, "kind", "") == "tfrecord"
        and getattr(summary, "records", 0) == 0
        and bool(getattr(summary, "problems", None))
        and not str(summary.problems[0]).startswith("empty file")  # type: ignore[attr-defined]
    )


def _film_split() -> Path:
    from mammo_pipeline.config import get_settings

    return get_settings().film_test_split


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="tfrecord / *_data.npy files or dirs")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    grid: Annotated[Path | None, typer.Option(help="write a PNG grid of sample tiles")] = None,
) -> None:
    """Record counts, class counts and schema problems of data files."""
    from mammo_pipeline.data.inspect import expand_paths, summarize, write_grid
    from mammo_pipeline.data.schema import LABEL_NAMES

    files = expand_paths(paths)
    summaries = [summarize(p) for p in files]
    unreadable = [s for s in summaries if _not_tfrecord(s)]
    if unreadable and len(unreadable) == len(summaries) and not as_json:
        first = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise MammoError(f"{first.path}: not a tfrecord file ({first.problems[0]}){more}")
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        for s in summaries:
            if _not_tfrecord(s):
                typer.echo(f"{s.path}  not a tfrecord file ({s.problems[0]})")
                continue
            labels = ", ".join(
                f"{k}:{LABEL_NAMES.get(k, '?')}={v}" for k, v in s.label_counts.items()
            )
            typer.echo(
                f"{s.path}  [{s.kind}, compression={s.compression}]  records={s.records}  "
                f"positive={s.label_normal_counts.get(1, 0)} ({s.positive_fraction:.1%})"
            )
            typer.echo(f"    label counts: {labels or '-'}")
            if s.problem_count:
                typer.secho(f"    {s.problem_count} problem(s):", fg=typer.colors.YELLOW)
                for p in s.problems:
                    typer.echo(f"      - {p}")
        total = sum(s.records for s in summaries)
        typer.echo(f"{len(summaries)} file(s), {total} records")
    if grid is not None:
        typer.echo(f"sample grid: {write_grid(files, grid)}")
    bad = [s for s in summaries if s.problem_count]
    if bad:  # input errors exit non-zero, as for every other command
        typer.secho(
            f"error: {len(bad)} of {len(summaries)} file(s) have problems: "
            + ", ".join(str(s.path) for s in bad),
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
