"""PNG picture of an analysis: the mammogram in gray, the tile probabilities over it, the
top regions outlined (solid at or above the threshold, dashed below) and numbered, a colour
bar, and two text lines (the result, with the data's provenance named: SYNTHETIC when
declared, else "provenance not declared", never "real" by default; and a caption naming
the model).

The picture has the image's aspect ratio: everything is drawn over the image (colour bar on
the side with less breast), so the PNG's width / height equals the image's. Matplotlib with
the Agg backend, no display needed.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mammo_pipeline.analysis.analyze import AnalysisResult
from mammo_pipeline.analysis.errors import AnalysisInputError
from mammo_pipeline.common.files import write_bytes_atomic
from mammo_pipeline.data.preprocess import to_uint8_gray
from mammo_pipeline.imaging import to_display_uint8
from mammo_pipeline.imaging.preprocess import to_intensity

#: Longest side of the picture in pixels.
HEATMAP_MAX_SIDE = 1024
_DPI = 100
_COLORMAP = "turbo"


def probability_map(
    result: AnalysisResult, shape: tuple[int, int], reduce: Literal["max", "mean"] = "max"
) -> np.ndarray:
    """Per-pixel probability on a ``shape`` (h, w) picture of the image: the max (or mean)
    over the scored tiles covering each pixel; NaN where no scored tile covers it."""
    h, w = shape
    sy, sx = h / result.image_height, w / result.image_width
    if reduce == "max":
        acc = np.full(shape, -np.inf)
    elif reduce == "mean":
        acc, count = np.zeros(shape), np.zeros(shape)
    else:
        raise AnalysisInputError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    for box, p in result.grid.scored():
        y0, y1 = round(box.y0 * sy), max(round(box.y1 * sy), round(box.y0 * sy) + 1)
        x0, x1 = round(box.x0 * sx), max(round(box.x1 * sx), round(box.x0 * sx) + 1)
        if reduce == "max":
            np.maximum(acc[y0:y1, x0:x1], p, out=acc[y0:y1, x0:x1])
        else:
            acc[y0:y1, x0:x1] += p
            count[y0:y1, x0:x1] += 1
    if reduce == "max":
        acc[np.isneginf(acc)] = np.nan
        return acc
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, acc / np.maximum(count, 1), np.nan)


def _display_gray(pixels: np.ndarray, result: AnalysisResult, max_side: int) -> np.ndarray:
    try:  # the analysis' own intensity window: the picture shows what the model saw
        if result.intensity_window is not None:
            gray = to_display_uint8(to_intensity(pixels), result.intensity_window)
        else:
            gray = to_uint8_gray(np.asarray(pixels))[..., 0]
    except ValueError as exc:
        raise AnalysisInputError(f"image cannot be drawn: {exc}") from exc
    h, w = gray.shape
    if (h, w) != (result.image_height, result.image_width):
        raise AnalysisInputError(
            f"image of {w}x{h} px is not the analysed one "
            f"({result.image_width}x{result.image_height} px)"
        )
    k = max_side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))


def _headline(result: AnalysisResult, synthetic: bool) -> str:
    from mammo_pipeline.data.provenance import NOT_DECLARED

    data = "SYNTHETIC data" if synthetic else NOT_DECLARED
    return (
        f"{data} | score {result.score:.3f} (max tile probability) -> "
        f"{result.label.upper()} at threshold {result.threshold:.3f} | "
        f"{result.tiles_scored} tiles of {result.tile_size_mm:.1f} mm, spacing "
        f"{result.pixel_spacing_mm:g} mm/px ({result.spacing_source})"
    )


def render_heatmap(
    pixels: np.ndarray,
    result: AnalysisResult,
    out: Path | str | None = None,
    *,
    caption: str,
    synthetic: bool,
    reduce: Literal["max", "mean"] = "max",
    max_side: int = HEATMAP_MAX_SIDE,
    alpha: float = 0.45,
) -> bytes:
    """The PNG bytes of the picture (also written atomically to ``out`` when given).

    ``caption`` names the model (version, weights); ``synthetic`` says the data was declared
    SYNTHETIC (by the client or the file's marker); otherwise the picture says "provenance
    not declared", never "real".
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    gray = _display_gray(pixels, result, max_side)
    h, w = gray.shape
    heat = np.ma.masked_invalid(probability_map(result, (h, w), reduce))
    sy, sx = h / result.image_height, w / result.image_width

    fig = plt.figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        mapped = ax.imshow(
            heat, cmap=_COLORMAP, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="nearest"
        )
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        font = float(np.clip(min(w, h) / 60.0, 6.0, 11.0))
        outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
        for region in result.regions:
            b = region.box
            solid = region.probability >= result.threshold  # dashed: below the threshold
            ax.add_patch(
                Rectangle(
                    (b.x0 * sx - 0.5, b.y0 * sy - 0.5),
                    (b.x1 - b.x0) * sx,
                    (b.y1 - b.y0) * sy,
                    fill=False,
                    edgecolor="white",
                    linewidth=1.6,
                    linestyle="-" if solid else "--",
                    path_effects=outline,
                )
            )
            under_headline = b.y0 * sy < 4 * font  # then label the box at its bottom
            ax.text(
                b.x0 * sx + 3,
                b.y1 * sy - 3 if under_headline else b.y0 * sy + 3,
                f"{region.rank}: {region.probability:.2f}",
                color="white",
                fontsize=font,
                fontweight="bold",
                va="bottom" if under_headline else "top",
                ha="left",
                path_effects=outline,
            )
        # Colour bar on the darker (less breast) half, its ticks towards the picture's edge.
        right_darker = gray[:, w // 2 :].mean() <= gray[:, : w // 2].mean()
        cax = fig.add_axes((0.86 if right_darker else 0.11, 0.2, 0.025, 0.6))
        bar = fig.colorbar(mapped, cax=cax)
        bar.solids.set_alpha(1.0)
        bar.set_label(
            f"tile probability ({reduce} over covering tiles)", color="white", fontsize=font
        )
        bar.ax.tick_params(colors="white", labelsize=font)
        ticks, label = ("right", "left") if right_darker else ("left", "right")
        bar.ax.yaxis.set_ticks_position(ticks)
        bar.ax.yaxis.set_label_position(label)
        chars = max(20, int(w / (0.62 * font * _DPI / 72)))
        box = {"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 2}
        fig.text(
            0.01,
            0.995,
            textwrap.fill(_headline(result, synthetic), chars),
            color="white",
            fontsize=font,
            va="top",
            ha="left",
            bbox=box,
        )
        fig.text(
            0.01,
            0.005,
            textwrap.fill(caption, chars),
            color="white",
            fontsize=font,
            va="bottom",
            ha="left",
            bbox=box,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if out is not None:
        write_bytes_atomic(Path(out), data)
    return data
