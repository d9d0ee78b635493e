"""``mammo train`` and ``mammo evaluate``: one MLflow run per training, test metrics printed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mammo_pipeline.cli.quiet import import_tensorflow_quietly
from mammo_pipeline.errors import MammoError

if TYPE_CHECKING:
    from mammo_pipeline.config import Settings

#: Rows of the printed test-metric table, in this order.
TABLE_METRICS = (
    "test_roc_auc",
    "test_pr_auc",
    "test_recall",
    "test_precision",
    "test_specificity",
    "test_f1",
    "test_accuracy",
    "test_recall_label_1",
    "test_recall_label_2",
    "test_recall_label_3",
    "test_recall_label_4",
)


def metrics_table(metrics: dict[str, float], threshold: float | None = None) -> str:
    """A short aligned two-column table of the test metrics."""
    from mammo_pipeline.data.schema import LABEL_NAMES

    rows = []
    if threshold is not None:
        rows.append(("decision_threshold", f"{threshold:.4f}"))
    for name in TABLE_METRICS:
        if name in metrics:
            label = name
            if name.startswith("test_recall_label_"):
                label = f"{name} ({LABEL_NAMES[int(name.rsplit('_', 1)[1])]})"
            value = metrics[name]
            missing = value is None or value != value  # None or NaN: undefined here
            rows.append((label, "n/a" if missing else f"{value:.4f}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _check_inputs(settings: Settings, files: list[Path] | None) -> None:
    """The training files and the held-out test split exist: one line each, before TensorFlow
    is imported (``train_model`` checks them again, the same way, after)."""
    from mammo_pipeline.data.manifest import held_out_files
    from mammo_pipeline.data.tfrecord_io import list_tfrecords

    if not files and not list_tfrecords(settings.validated):
        raise MammoError(f"{settings.validated}: no tfrecord files to train on")
    held_out_files(settings.test_split)


def register(app: typer.Typer) -> None:
    """Add ``mammo train`` and ``mammo evaluate`` to the top-level app."""

    @app.command()
    def train(
        data: Annotated[
            list[Path] | None,
            typer.Option(
                help="tfrecord files or folders, repeatable (default: the validated folder)"
            ),
        ] = None,
        epochs: Annotated[
            int | None, typer.Option(help="epochs of the new head (default: MAMMO_EPOCHS, 10)")
        ] = None,
        fine_tune_epochs: Annotated[
            int | None,
            typer.Option(help="epochs that also train the top VGG16 blocks (default 0)"),
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option(help="tiles per training step (default 32)")
        ] = None,
        learning_rate: Annotated[
            float | None, typer.Option(help="Adam learning rate, above 0 (default 0.001)")
        ] = None,
        image_size: Annotated[
            int | None, typer.Option(help="model input side in pixels, 16..1024 (default 299)")
        ] = None,
        trainable_blocks: Annotated[
            int | None,
            typer.Option(help="top VGG16 blocks unfrozen for fine-tuning, 0..5 (default 0)"),
        ] = None,
        max_records: Annotated[
            int | None, typer.Option(help="use at most this many training tiles (default: all)")
        ] = None,
        weights: Annotated[
            str | None, typer.Option(help="'imagenet', 'none' or a VGG16 notop .h5 path")
        ] = None,
        augment: Annotated[
            bool | None,
            typer.Option("--augment/--no-augment", help="flip/rotate training tiles (default on)"),
        ] = None,
        airflow_run_id: Annotated[str | None, typer.Option(hidden=True)] = None,
    ) -> None:
        """Train the VGG16 classifier (one MLflow run), evaluate it on the test split.

        Option values are checked once, by the settings' own ranges (one-line errors)."""
        from mammo_pipeline.config import get_settings
        from mammo_pipeline.overrides import apply_overrides

        files: list[Path] | None = None
        if data:
            from mammo_pipeline.data.schema import is_tfrecord_path
            from mammo_pipeline.data.tfrecord_io import list_tfrecords

            for path in data:  # one line, before TensorFlow is imported
                if not path.exists():
                    raise MammoError(f"{path}: no such file or directory")
                if path.is_file() and not is_tfrecord_path(path.name):
                    raise MammoError(f"{path}: not a tfrecord file (*.tfrecord, *.tfrecords)")
            files = [f for p in data for f in (list_tfrecords(p) if p.is_dir() else [p])]
            if not files:
                raise MammoError(f"no tfrecord files in {', '.join(map(str, data))}")
        overrides = dict(
            epochs=epochs,
            fine_tune_epochs=fine_tune_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            image_size=image_size,
            trainable_blocks=trainable_blocks,
            max_records=max_records,
            weights=weights,
            augment=augment,
        )
        # Checked before TensorFlow is imported: a bad value is one line, at once.
        settings = apply_overrides(get_settings(), overrides)
        _check_inputs(settings, files)  # the library checks again, after TensorFlow's import
        import_tensorflow_quietly()
        from mammo_pipeline.training.train import train_model

        tags = {"airflow_run_id": airflow_run_id} if airflow_run_id else None
        result = train_model(settings, files=files, run_tags=tags)
        if result.synthetic:
            typer.secho("Trained on SYNTHETIC data.", fg=typer.colors.YELLOW)
        if result.weights_source == "none":
            typer.secho("Weights were randomly initialised (weights=none).", fg=typer.colors.YELLOW)
        typer.echo(f"MLflow run id: {result.run_id}")
        typer.echo(f"model: {result.model_uri}")
        typer.echo(f"test metrics ({int(result.metrics.get('test_n', 0))} tiles):")
        typer.echo(metrics_table(result.metrics, result.decision_threshold))

    @app.command()
    def evaluate(
        run_id: Annotated[str, typer.Option("--run-id", help="MLflow run of a training")],
    ) -> None:
        """Evaluate a training run's model on the held-out test split; log it on the run."""
        from mammo_pipeline.config import get_settings

        import_tensorflow_quietly()
        from mammo_pipeline.training.evaluate import evaluate_run

        metrics = evaluate_run(get_settings(), run_id)
        typer.echo(f"MLflow run id: {run_id}")
        typer.echo(metrics_table(metrics, metrics.get("decision_threshold")))
