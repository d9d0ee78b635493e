"""The figures of the monitoring report (matplotlib, Agg backend) as PNG bytes.

Every figure carries the report's caption: which model version and weights, what data its
reference is (SYNTHETIC or not) and how much of the traffic was declared SYNTHETIC.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, caption: str) -> bytes:
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _labels(windows: list[dict[str, Any]]) -> list[str]:
    return [datetime.fromtimestamp(w["end"], UTC).strftime("%m-%d %H:%M") for w in windows]


def score_histograms(
    reference: np.ndarray, window: np.ndarray, threshold: float, caption: str, title: str
) -> bytes:
    """Reference (held-out) scores against the latest window's, as densities."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 26)
    ax.hist(reference, bins=bins, density=True, alpha=0.5, label=f"reference (n={reference.size})")
    if window.size:
        ax.hist(window, bins=bins, density=True, alpha=0.5, label=f"window (n={window.size})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _png(fig, caption)


def input_histograms(reference: np.ndarray, window: np.ndarray, name: str, caption: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    lo = float(min(reference.min(), window.min() if window.size else reference.min()))
    hi = float(max(reference.max(), window.max() if window.size else reference.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    ax.hist(reference, bins=bins, density=True, alpha=0.5, label=f"reference (n={reference.size})")
    if window.size:
        ax.hist(window, bins=bins, density=True, alpha=0.5, label=f"window (n={window.size})")
    ax.set_xlabel(f"{name} of the model input (0..255)")
    ax.set_title(f"Input statistic {name}: reference vs latest window")
    ax.legend()
    return _png(fig, caption)


def drift_over_windows(windows: list[dict[str, Any]], psi_threshold: float, caption: str) -> bytes:
    """PSI per window of the scores and the input statistics; drifting windows marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(windows))
    series: dict[str, list[float]] = {}
    for i, w in enumerate(windows):
        tests = ([w["score_drift"]] if w["score_drift"] else []) + w["input_drift"]
        for t in tests:
            series.setdefault(t["name"], [np.nan] * len(windows))[i] = t["psi"]
    for name, values in series.items():
        ax.plot(x, values, "-o", label=f"PSI {name}", markersize=4)
    ax.axhline(psi_threshold, color="red", linestyle="--", label=f"PSI threshold {psi_threshold:g}")
    for i, w in enumerate(windows):
        if w["drifts"]:
            ax.axvspan(i - 0.4, i + 0.4, color="red", alpha=0.12)
        elif not w["sufficient"]:
            ax.axvspan(i - 0.4, i + 0.4, color="grey", alpha=0.12)
    ax.set_xticks(x, _labels(windows), rotation=45, fontsize=7)
    ax.set_ylabel("PSI")
    ax.set_title("Drift per window (red: drifting, grey: too few records to judge)")
    ax.legend(fontsize=7)
    return _png(fig, caption)


def intervals_over_windows(
    windows: list[dict[str, Any]],
    key: str,
    title: str,
    line: float | None,
    line_label: str,
    caption: str,
) -> bytes:
    """A rate per window with its Wilson interval (``key``: ``positive_rate`` or a
    performance figure) and a reference line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, w in enumerate(windows):
        iv = (
            w["positive_rate"]["rate"]
            if key == "positive_rate" and w["positive_rate"]
            else (w["performance"].get(key))
        )
        if not iv or iv["point"] is None:
            continue
        ax.errorbar(
            i,
            iv["point"],
            yerr=[[iv["point"] - iv["low"]], [iv["high"] - iv["point"]]],
            fmt="o",
            color="C0",
            capsize=4,
        )
        ax.annotate(f"n={iv['n']}", (i, iv["high"]), fontsize=7, ha="center", va="bottom")
    if line is not None:
        ax.axhline(line, color="red", linestyle="--", label=line_label)
        ax.legend(fontsize=8)
    ax.set_xticks(np.arange(len(windows)), _labels(windows), rotation=45, fontsize=7)
    ax.set_xlim(-0.5, max(len(windows) - 0.5, 0.5))
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    return _png(fig, caption)
