"""Fitting the model: phase 1 (head on cached VGG16 features, or the full model with the base
frozen when augmenting) and phase 2 (fine-tuning the top VGG16 blocks), with early stopping and
the best checkpoint on validation ROC AUC, every epoch logged to the active MLflow run."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from mammo_pipeline.data.pipeline import read_labels
from mammo_pipeline.errors import TrainingDiverged
from mammo_pipeline.training.train import TrainData, class_weights


class _EpochLogger:
    """Keras callback factory logging each epoch's metrics (and learning rate) to MLflow."""

    @staticmethod
    def make(optimizer):
        import keras
        import mlflow

        class EpochLogger(keras.callbacks.Callback):
            started = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                metrics = {k: float(v) for k, v in (logs or {}).items()}
                # the model's own time, apart from the platform's (landing-to-served timeline)
                metrics["epoch_seconds"] = time.perf_counter() - self.started
                lr = keras.ops.convert_to_numpy(optimizer.learning_rate)
                metrics["learning_rate"] = float(lr)
                mlflow.log_metrics(metrics, step=epoch + 1)

        return EpochLogger()


def _log_seconds(key: str, seconds: float) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metric(key, seconds)


def _compile(model, learning_rate: float, steps: int):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, steps), alpha=0.1
    )
    optimizer = keras.optimizers.Adam(schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
    )
    return optimizer


class _Divergence:
    """Keras callback factory: stop at the first non-finite loss and remember where."""

    @staticmethod
    def make():
        import keras

        class StopOnNonFiniteLoss(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.diverged: tuple[int, float] | None = None
                self.epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch + 1

            def _check(self, logs) -> None:
                for key in ("loss", "val_loss"):
                    value = (logs or {}).get(key)
                    if value is not None and not math.isfinite(float(value)):
                        self.diverged = self.diverged or (self.epoch, float(value))
                        self.model.stop_training = True

            def on_train_batch_end(self, batch, logs=None):
                self._check(logs)

            def on_epoch_end(self, epoch, logs=None):
                self._check(logs)

        return StopOnNonFiniteLoss()


def _raise_if_diverged(callbacks: list, learning_rate: float) -> None:
    for cb in callbacks:
        found = getattr(cb, "diverged", None)
        if found is not None:
            raise TrainingDiverged(found[0], found[1], learning_rate)


def _callbacks(optimizer, checkpoint: Path, patience: int, best: float | None):
    import keras

    return [
        _Divergence.make(),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor="val_auc",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
            verbose=0,
        ),
        _EpochLogger.make(optimizer),
    ]


def _merge(history: dict[str, list[float]], new: dict[str, list]) -> None:
    for k, v in new.items():
        history.setdefault(k, []).extend(float(x) for x in v)


def _best(history: dict[str, list[float]]) -> float | None:
    values = [v for v in history.get("val_auc", []) if math.isfinite(v)]
    return max(values) if values else None


def extract_features(extractor, dataset) -> np.ndarray:
    """Pooled VGG16 features of every image of ``dataset`` (one pass, with progress)."""
    return np.asarray(extractor.predict(dataset, verbose=1), dtype=np.float32)


def fit_head_on_features(model, data: TrainData, tmp: Path, history: dict) -> np.ndarray:
    """Phase 1 with cached features; returns validation scores of the best head."""
    from mammo_pipeline.training.model import feature_extractor, head_of

    s = data.settings
    extractor = feature_extractor(model)
    print(
        f"Caching VGG16 features of {data.n_train} training and {data.n_val} "
        "validation records (base frozen, no augmentation)"
    )
    started = time.perf_counter()
    x_train = extract_features(extractor, data.dataset("train", False))
    y_train = (read_labels(data.files, data.opts("train", False)) > 0).astype(np.float32)
    x_val = extract_features(extractor, data.dataset("validation", False))
    _log_seconds("feature_cache_seconds", time.perf_counter() - started)
    y_val = data.val_labels.astype(np.float32)
    head = head_of(model)
    steps = math.ceil(data.n_train / s.batch_size) * s.epochs
    optimizer = _compile(head, s.learning_rate, steps)
    ckpt = tmp / "head_best.weights.h5"
    callbacks = _callbacks(optimizer, ckpt, s.early_stopping_patience, None)
    result = head.fit(
        x_train,
        y_train,
        batch_size=s.batch_size,
        epochs=s.epochs,
        shuffle=True,
        validation_data=(x_val, y_val),
        class_weight=class_weights(data.label_counts),
        callbacks=callbacks,
        verbose=2,
    )
    _merge(history, result.history)
    _raise_if_diverged(callbacks, s.learning_rate)
    if ckpt.is_file():
        head.load_weights(str(ckpt))
    return np.asarray(head.predict(x_val, verbose=0), dtype=np.float64).reshape(-1)


def fit_full(model, data: TrainData, tmp: Path, history: dict, *, phase: int) -> bool:
    """Fit the full model (frozen base in phase 1 with augmentation, or phase 2 fine-tuning).

    Returns whether a new best checkpoint was restored.
    """
    s = data.settings
    epochs = s.epochs if phase == 1 else s.fine_tune_epochs
    lr = s.learning_rate if phase == 1 else s.fine_tune_learning_rate
    steps = math.ceil(data.n_train / s.batch_size) * epochs
    optimizer = _compile(model, lr, steps)
    ckpt = tmp / f"phase{phase}_best.weights.h5"
    done = len(history.get("loss", []))
    callbacks = _callbacks(optimizer, ckpt, s.early_stopping_patience, _best(history))
    result = model.fit(
        data.dataset("train", True),
        validation_data=data.dataset("validation", False),
        initial_epoch=done,
        epochs=done + epochs,
        shuffle=False,  # the tf.data pipeline shuffles; Keras would warn that it ignores this
        class_weight=class_weights(data.label_counts),
        callbacks=callbacks,
        verbose=2,
    )
    _merge(history, result.history)
    _raise_if_diverged(callbacks, lr)
    if ckpt.is_file():
        model.load_weights(str(ckpt))
        return True
    return False


def fit(model, data: TrainData, tmp: Path) -> tuple[dict, np.ndarray, bool, int]:
    """Both phases; returns (history, validation scores, feature_cache used, phase-1 epochs)."""
    from mammo_pipeline.training.evaluate import predict_scores
    from mammo_pipeline.training.model import set_trainable_blocks

    s = data.settings
    history: dict[str, list[float]] = {}
    cached = not s.augment
    set_trainable_blocks(model, 0)
    if cached:
        val_scores = fit_head_on_features(model, data, tmp, history)
    else:
        fit_full(model, data, tmp, history, phase=1)
        val_scores = None
    phase1_epochs = len(history.get("loss", []))
    if s.fine_tune_epochs > 0 and s.trainable_blocks > 0:
        phase1 = tmp / "phase1.weights.h5"
        model.save_weights(str(phase1))
        set_trainable_blocks(model, s.trainable_blocks)
        print(
            f"Fine-tuning the top {s.trainable_blocks} VGG16 block(s) "
            f"at learning rate {s.fine_tune_learning_rate}"
        )
        if fit_full(model, data, tmp, history, phase=2):
            val_scores = None
        else:  # phase 2 never beat phase 1
            model.load_weights(str(phase1))
        set_trainable_blocks(model, 0)
    if val_scores is None:
        val_scores = predict_scores(model, data.dataset("validation", False))
    return history, val_scores, cached, phase1_epochs
