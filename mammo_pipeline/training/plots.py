"""PNG figures logged with each training run (matplotlib, Agg backend, no display needed).

Every figure says "SYNTHETIC data" in its title when the data is synthetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_NOTE = " [SYNTHETIC data]"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _suffix(synthetic: bool) -> str:
    return SYNTHETIC_NOTE if synthetic else ""


def training_curves(
    history: Mapping[str, Sequence[float]],
    out: Path | str,
    *,
    synthetic: bool = False,
    phase_boundary: int | None = None,
) -> Path:
    """Loss and ROC AUC per epoch, training and validation, one panel each."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "auc"), strict=True):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            values = list(history.get(name, []))
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=name, markersize=3)
        if phase_boundary:
            ax.axvline(phase_boundary + 0.5, color="grey", linestyle=":", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title("ROC AUC" if key == "auc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves" + _suffix(synthetic))
    return _save(fig, out)


def confusion_matrix_plot(
    matrix: np.ndarray, out: Path | str, *, threshold: float, synthetic: bool = False
) -> Path:
    """2x2 confusion matrix with counts; the decision threshold is in the title."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(matrix, cmap="Blues")
    names = ["negative", "positive"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(int(v)),
            ha="center",
            va="center",
            color="white" if v > top / 2 else "black",
            fontsize=13,
        )
    ax.set_title(
        f"Test confusion matrix, threshold {threshold:.3f}{_suffix(synthetic)}", fontsize=9
    )
    return _save(fig, out)


def roc_pr_plot(
    y_true: np.ndarray,
    scores: np.ndarray,
    out: Path | str,
    *,
    threshold: float,
    synthetic: bool = False,
) -> Path:
    """ROC and precision-recall curves with the operating point at ``threshold`` marked."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    pred = scores >= threshold
    pos, neg = y_true == 1, y_true == 0
    if pos.any() and neg.any():
        fpr, tpr, _ = roc_curve(y_true, scores)
        ax1.plot(fpr, tpr, label=f"ROC AUC {auc(fpr, tpr):.3f}")
        ax1.plot([0, 1], [0, 1], ":", color="grey")
        ax1.plot(
            (pred & neg).sum() / neg.sum(), (pred & pos).sum() / pos.sum(), "ro", label="threshold"
        )
        precision, recall, _ = precision_recall_curve(y_true, scores)
        ax2.plot(recall, precision, label="PR curve")
        ax2.axhline(pos.mean(), linestyle=":", color="grey", label="prevalence")
        if pred.any():
            ax2.plot(
                (pred & pos).sum() / pos.sum(),
                (pred & pos).sum() / pred.sum(),
                "ro",
                label="threshold",
            )
    ax1.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC")
    ax2.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax1 else "lower left")
    fig.suptitle("Held-out test set" + _suffix(synthetic))
    return _save(fig, out)


def froc_plot(
    fp_per_image: np.ndarray,
    sensitivity: np.ndarray,
    out: Path | str,
    *,
    summary: Any = None,
    synthetic: bool = False,
    weights: str = "",
) -> Path:
    """FROC curve of the film set (lesion sensitivity against false positives per image),
    the 0.5 / 1 / 2 FP/image readings marked; the title names the data and the weights."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.4))
    ax.step(fp_per_image, sensitivity, where="post", label="FROC (top-k regions)")
    if summary is not None:
        for rate, value in summary.froc.items():
            if np.isfinite(value):
                ax.plot(rate, value, "o", label=f"{rate:g} FP/image: {value:.2f}")
        auc = summary.roc_auc
        ax.text(0.98, 0.04,
                f"{summary.n} films ({summary.positives} with lesions)\n"
                f"film ROC AUC {auc.describe(3)}\ntop-1 hit rate {summary.top1_hit_rate:.2f}",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8)  # fmt: skip
    ax.set(xlabel="false positives per image", ylabel="lesion sensitivity", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    who = f"; weights: {weights}" if weights else ""
    ax.set_title("Film-level FROC" + _suffix(synthetic) + who, fontsize=9)
    return _save(fig, out)


def _save(fig, out: Path | str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    _plt().close(fig)
    return out
