"""Whole-mammogram analysis on SYNTHETIC films: breast mask, tiling and coordinates, batching
and bounded memory, non-finite scores, the heatmap picture, and one real tiny Keras model."""

from __future__ import annotations

import io
import json
import math
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from mammo_pipeline.analysis import (
    AGGREGATION,
    AnalysisInputError,
    Box,
    ModelOutputError,
    NoBreastTissueError,
    NonFiniteScoreError,
    analyze,
    render_heatmap,
)
from mammo_pipeline.data.synthetic import make_tile
from mammo_pipeline.data.synthetic_film import make_film
from mammo_pipeline.imaging import breast_mask
from mammo_pipeline.imaging.preprocess import (
    MIN_BREAST_FRACTION,
    breast_coverage,
    cut_window,
    prepare_film,
    window_starts,
)

MARKER_MM = 6.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def constant(p: float):
    return lambda x: np.full(len(x), p, dtype=np.float32)


class MarkerModel:
    """Deterministic ``predict_batch``: a tile's probability grows with how much of a bright
    (255) marker it holds; the film itself is clipped to <= 200 so nothing else counts. It
    records every batch it is given."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: set[np.dtype] = set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        self.dtypes.add(x.dtype)
        return np.minimum((x >= 235).mean(axis=(1, 2, 3)) * 25.0, 1.0)


def film_with_marker(mm: float, height: int = 1600, width: int = 1000, seed: int = 3):
    film = make_film(height, width, lesion="none", seed=seed, mm_per_px=mm)
    pixels = np.minimum(film.pixels, 200)
    side = round(MARKER_MM / mm)
    y0, x0 = round(0.6 * height), round(0.18 * width)
    assert film.breast_mask[y0 : y0 + side, x0 : x0 + side].all()
    pixels[y0 : y0 + side, x0 : x0 + side] = 255
    return film, pixels, Box(x0, y0, x0 + side, y0 + side)


# --- breast mask -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "side", "mm"), [("uint8", "left", 0.1), ("uint16", "right", 0.05)]
)
def test_breast_mask_covers_the_planted_breast_and_not_the_background(dtype, side, mm):
    film = make_film(1200, 800, lesion="mass", seed=1, dtype=dtype, side=side, mm_per_px=mm)
    mask = breast_mask(film.pixels)
    assert mask.shape == film.pixels.shape and mask.dtype == bool
    assert iou(mask, film.breast_mask) > 0.9
    background = ~film.breast_mask
    assert (mask & background).sum() / background.sum() < 0.01
    assert film.synthetic and film.tag == "SYNTHETIC" and "SYNTHETIC" in film.describe()


def test_breast_mask_of_a_tile_without_background_and_of_a_blank_image():
    tile = make_tile(0, "train", 0, 0)  # tissue everywhere: no background visible
    assert breast_mask(tile).all()
    assert not breast_mask(np.full((300, 200), 17, dtype=np.uint8)).any()
    with pytest.raises(ValueError, match="NaN"):
        breast_mask(np.full((50, 50), np.nan))


# --- tiling, coordinates, batching --------------------------------------------------------


def test_window_grid_is_symmetric_and_inside_the_film():
    # was (0, 150, 300, 450, 600, 701): the last window pushed to the far edge, so the grid of
    # a mirrored film was not the mirror of the grid. A centred grid overhanging both edges
    # (-22, 127, ..., 723) was symmetric but filled the overhang with black, a strip no
    # training tile has. Now the windows are spread evenly from edge to edge.
    assert window_starts(1000, 299, 150) == (0, 140, 280, 421, 561, 701)
    assert window_starts(299, 299, 150) == (0,)
    assert window_starts(120, 299, 150) == (-89,)  # one window, centred
    assert window_starts(897, 299, 299) == (0, 299, 598)  # an exact fit
    assert window_starts(898, 299, 299) == (0, 200, 399, 599)  # odd span: no middle window
    for length in range(300, 1400, 37):
        for stride in (75, 149, 150, 299):
            starts = window_starts(length, 299, stride)
            assert starts[0] == 0 and starts[-1] + 299 == length  # inside, edge to edge
            assert max(np.diff(starts)) <= stride  # never sparser than asked
            assert max(np.diff(starts)) - min(np.diff(starts)) <= 1  # evenly spread
            mirrored = tuple(length - 299 - s for s in reversed(starts))
            assert mirrored == starts  # the grid of a mirrored axis is the mirrored grid


@pytest.mark.parametrize("mm", [0.05, 0.1, 0.2])
def test_tiles_cover_the_breast_and_boxes_map_back_to_the_original(mm):
    film, pixels, marker = film_with_marker(mm)
    model = MarkerModel(image_size=48)
    result = analyze(
        pixels,
        predict_batch=model,
        image_size=48,
        threshold=0.5,
        pixel_spacing_mm=mm,
        spacing_source="dicom",
        batch_size=7,
        top_k=4,
    )
    # the top region is where the marker is, in ORIGINAL pixel coordinates
    top = result.regions[0]
    assert top.box.intersection(marker) == marker.area, (top, marker)
    assert result.score == pytest.approx(top.probability) and result.score > 0.2
    assert result.label == ("positive" if result.score >= 0.5 else "negative")
    assert result.aggregation == AGGREGATION == "max_tile_probability"
    # windows are 29.9 mm whatever the spacing
    side = 299 * 0.1 / mm
    for box, _ in result.grid.scored():
        if 0 < box.x0 and box.x1 < 1000:
            assert abs(box.x1 - box.x0 - side) <= 2
        if 0 < box.y0 and box.y1 < 1600:
            assert abs(box.y1 - box.y0 - side) <= 2
    # the regions are distinct places, ranked by probability (fewer than top_k when the
    # film has fewer distinct windows: at 0.05 mm/px it is only 80 x 50 mm, one window wide
    # beside the chest wall)
    probs = [r.probability for r in result.regions]
    assert probs == sorted(probs, reverse=True)
    assert [r.rank for r in result.regions] == list(range(1, len(probs) + 1))
    assert (1 if mm == 0.05 else 2) <= len(probs) <= 4
    for i, a in enumerate(result.regions):
        for b in result.regions[i + 1 :]:
            assert a.box.iou(b.box) <= 0.1
    # Scored windows are the normal training tiles' kind: at least MIN_BREAST_FRACTION breast
    # (was > 0.25, which scored mostly-background windows the model never saw). Together
    # they cover nearly all the breast; the thin rim along the skin line that no such window
    # reaches is not scored, by design.
    truth = film.breast_mask
    covered = np.zeros_like(truth)
    for box, _ in result.grid.scored():
        assert truth[box.y0 : box.y1, box.x0 : box.x1].mean() > MIN_BREAST_FRACTION - 0.05
        covered[box.y0 : box.y1, box.x0 : box.x1] = True
    assert (covered & truth).sum() / truth.sum() > 0.85  # 0.96 at 0.1 mm, 0.87 at 0.05
    rows, cols = np.nonzero(np.isnan(result.grid.probabilities))
    unscored = [result.grid.box(r, c) for r, c in zip(rows, cols, strict=True)]
    assert unscored, "the background windows must be skipped"
    for box in unscored:
        assert truth[box.y0 : box.y1, box.x0 : box.x1].mean() < MIN_BREAST_FRACTION + 0.05
    # batches: sizes, count and the model input contract
    n = result.tiles_scored
    assert len(model.shapes) == math.ceil(n / 7)
    assert all(s == (7, 48, 48, 1) for s in model.shapes[:-1])
    assert model.shapes[-1] == (n - 7 * (len(model.shapes) - 1), 48, 48, 1)
    assert model.dtypes == {np.dtype(np.float32)}
    # the answer says which scale was used and is JSON-safe
    answer = json.loads(json.dumps(result.to_dict()))
    assert answer["scale"] == {
        "pixel_spacing_mm": mm,
        "spacing_source": "dicom",
        "target_mm_per_px": 0.1,
    }
    assert answer["image"] == {"height": 1600, "width": 1000}
    assert answer["regions"][0]["x0"] == top.box.x0 and answer["tiles_scored"] == n
    grid = answer["grid"]["probabilities"]
    assert sum(p is not None for row in grid for p in row) == n
    assert any(p is None for row in grid for p in row)


def test_tiles_are_made_lazily_one_batch_at_a_time():
    # The prepared film (float intensities, then uint8) is held once whatever the number of
    # tiles; the tiles are cut a batch at a time, so the peak must not grow with their
    # number: compare a coarse and a 4x denser grid over the same film.
    film = make_film(2400, 1600, lesion="none", seed=5)
    kwargs = dict(image_size=16, threshold=0.5, batch_size=8)
    analyze(film.pixels[:700, :700], predict_batch=constant(0.1), **kwargs)  # warm-up
    peaks, counts = [], []
    for stride in (0.5, 0.25):
        tracemalloc.start()
        try:
            result = analyze(film.pixels, predict_batch=constant(0.1), stride_fraction=stride,
                             **kwargs)  # fmt: skip
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        counts.append(result.tiles_scored)
    extra_tiles = (counts[1] - counts[0]) * 299 * 299  # bytes if the extra tiles were held
    assert counts[1] > 3 * counts[0] > 100, counts
    assert peaks[1] - peaks[0] < extra_tiles / 10, (peaks, extra_tiles)
    film_float = film.pixels.size * 4  # the film as float32
    assert peaks[1] < 4 * film_float, (peaks, film_float)


def test_small_image_is_one_padded_window_and_spacing_defaults_are_recorded():
    tile = make_tile(0, "train", 1, 2)[:200, :150]
    result = analyze(tile, predict_batch=constant(0.7), image_size=32, threshold=0.5)
    assert result.tiles_scored == 1 and result.windows_total == 1
    assert result.regions[0].box == Box(0, 0, 150, 200)
    assert (result.pixel_spacing_mm, result.spacing_source) == (0.1, "default")
    assert result.label == "positive" and result.score == pytest.approx(0.7)
    form = analyze(tile, predict_batch=constant(0.2), image_size=32, threshold=0.5,
                   pixel_spacing_mm=0.07)  # fmt: skip
    assert (form.spacing_source, form.label) == ("form", "negative")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_probability_is_an_error_never_a_negative(bad):
    film = make_film(900, 600, lesion="none", seed=2)

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.full(len(x), 0.01)
        out[-1] = bad
        return out

    with pytest.raises(NonFiniteScoreError, match="never read as negative") as err:
        analyze(film.pixels, predict_batch=predict, image_size=16, threshold=0.5)
    assert "'x0'" in str(err.value)  # names the tile by its box


def test_wrong_model_answers_and_bad_inputs_are_clear_errors():
    film = make_film(900, 600, lesion="none", seed=2)
    run = dict(image_size=16, threshold=0.5)
    with pytest.raises(ModelOutputError, match="values for"):
        analyze(film.pixels, predict_batch=lambda x: np.zeros(len(x) + 1), **run)
    with pytest.raises(ModelOutputError, match="within 0..1"):
        analyze(film.pixels, predict_batch=lambda x: np.full(len(x), 3.2), **run)
    with pytest.raises(NoBreastTissueError, match="nothing to score"):
        analyze(np.zeros((800, 600), np.uint8), predict_batch=constant(0.5), **run)
    for spacing in (0.0, -0.1, float("nan"), 50.0):
        with pytest.raises(AnalysisInputError, match="spacing"):
            analyze(film.pixels, predict_batch=constant(0.5), pixel_spacing_mm=spacing, **run)
    with pytest.raises(AnalysisInputError, match="threshold"):
        analyze(film.pixels, predict_batch=constant(0.5), image_size=16, threshold=float("nan"))
    with pytest.raises(AnalysisInputError):
        analyze(np.zeros((4, 5, 6, 7)), predict_batch=constant(0.5), **run)


# --- heatmap -------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "reduce"), [(1600, 1000, "max"), (700, 1300, "mean")])
def test_heatmap_png_has_the_image_aspect_ratio_and_shows_the_hot_tile(
    tmp_path, height, width, reduce
):
    film, pixels, marker = film_with_marker(0.1, height, width, seed=4)
    result = analyze(pixels, predict_batch=MarkerModel(32), image_size=32, threshold=0.5)
    out = tmp_path / "figs" / "heat.png"
    png = render_heatmap(
        pixels, result, out, caption="model test v1 (weights: none)", synthetic=True,
        reduce=reduce,
    )  # fmt: skip
    assert out.read_bytes() == png
    assert [p.name for p in out.parent.iterdir()] == ["heat.png"]  # no temp file left
    img = Image.open(io.BytesIO(png))
    img.load()
    w, h = img.size
    assert max(w, h) == 1024
    assert abs(w / h - width / height) < 0.01
    rgb = np.asarray(img.convert("RGB")).astype(int)
    k = w / width
    cy, cx = round((marker.y0 + marker.y1) / 2 * k), round((marker.x0 + marker.x1) / 2 * k)
    colour = rgb.max(axis=-1) - rgb.min(axis=-1)  # 0 for gray
    assert colour[cy - 4 : cy + 5, cx - 4 : cx + 5].mean() > 40  # the heatmap over the marker
    # the background far from the breast stays gray (no tile covers it)
    by, bx = round(0.12 * h), (w - 1 - 20 if film.side == "left" else 20)
    assert colour[by - 3 : by + 4, bx - 3 : bx + 4].max() <= 2


def test_heatmap_refuses_an_image_that_is_not_the_analysed_one():
    film = make_film(900, 600, lesion="none", seed=2)
    result = analyze(film.pixels, predict_batch=constant(0.3), image_size=16, threshold=0.5)
    with pytest.raises(AnalysisInputError, match="not the analysed one"):
        render_heatmap(film.pixels[:800], result, caption="x", synthetic=True)


# --- a real tiny Keras model ---------------------------------------------------------------


def _training_tiles(tmp_path, image_size: int):
    """SYNTHETIC mass / normal tiles from ``data.synthetic.generate`` (calcifications are
    dropped: at 32 px they are below one pixel), plus normal tiles cut at random from
    lesion-free SYNTHETIC films prepared as the importers prepare them, with the normal-tile
    breast rule (negatives from all over the breast)."""
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.preprocess import prepare_image
    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.data.tfrecord_io import iter_records

    ds = generate(tmp_path / "tiles", 300, files=2, positive_fraction=0.5, seed=11,
                  progress=False)  # fmt: skip
    images, labels = [], []
    for path in ds.train_files:
        for raw in iter_records(path):
            tile = decode_tile(raw)
            if tile.label in (0, 2, 4):
                images.append(tile.pixels())
                labels.append(tile.label_normal)
    rng = np.random.default_rng(5)
    for seed in range(100, 104):  # as the importers cut them: from the prepared film
        prepared = prepare_film(make_film(1500, 1000, lesion="none", seed=seed).pixels,
                                spacing_mm=0.1)  # fmt: skip
        taken = 0
        while taken < 30:
            y, x = int(rng.integers(0, 1500 - 299)), int(rng.integers(0, 1000 - 299))
            if breast_coverage(prepared, y, x) >= MIN_BREAST_FRACTION:
                images.append(cut_window(prepared, y, x))
                labels.append(0)
                taken += 1
    x = np.asarray(prepare_image(np.stack(images)[..., np.newaxis], image_size))
    return x, np.asarray(labels, dtype="float32")


def _tiny_cnn(image_size: int):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((image_size, image_size, 1))
    h = keras.layers.Rescaling(1.0 / 255.0)(inp)
    h = keras.layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False)(h)
    for filters in (8, 16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    return model


@pytest.mark.slow
def test_real_tiny_model_finds_the_planted_mass_on_a_whole_film(tmp_path):
    size = 32
    x, y = _training_tiles(tmp_path, size)
    model = _tiny_cnn(size)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0, shuffle=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(batch)[:, 0]

    mm = 0.05  # a 2000 x 1200 film at a DICOM-like 0.05 mm/px: 100 x 60 mm
    for seed in (1, 4):  # masses clearly visible at 32 px (some are faint at that size)
        with_mass = make_film(2000, 1200, lesion="mass", malignant=True, seed=seed, mm_per_px=mm)
        without = make_film(2000, 1200, lesion="none", seed=seed, mm_per_px=mm)
        run = dict(predict_batch=predict, image_size=size, threshold=0.5, pixel_spacing_mm=mm)
        found = analyze(with_mass.pixels, **run)
        clear = analyze(without.pixels, **run)
        assert found.regions and found.tiles_scored > 5
        assert found.regions[0].box.intersection(Box(*with_mass.lesion_box)) > 0, (
            found.regions[0],
            with_mass.lesion_box,
        )
        assert found.score > clear.score, (found.score, clear.score)
        png = render_heatmap(
            with_mass.pixels, found, tmp_path / f"heat{seed}.png",
            caption=f"tiny CNN at {size} px, trained in this test", synthetic=True,
        )  # fmt: skip
        assert Image.open(io.BytesIO(png)).size[1] == 1024
