"""The service's bounds as library pieces, without a server (fast): the streaming form
checks, the shared budgets and their 503s, and /analyze's bounds before any pixel moves
(resampled size, window count, time budget). tests/test_service_hostile.py runs the same
bounds against a real ``bentoml serve``."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from mammo_pipeline.analysis import (
    AnalysisTimeError,
    FilmTooLargeError,
    TooManyWindowsError,
    analyze,
    check_film_bounds,
)
from mammo_pipeline.imaging.preprocess import window_starts
from mammo_pipeline.serving.image_io import InputError
from mammo_pipeline.serving.limits import (
    Admission,
    BusyError,
    MemoryBudget,
    PixelBudget,
    shared_budget,
)
from mammo_pipeline.serving.upload_form import FormSpec, FormStream, sanitize_form

CT = "multipart/form-data; boundary=xyzzy"


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = []
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--xyzzy\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n")
    out.append(b"--xyzzy--\r\n")
    return b"".join(out)


# --- the streaming form checks --------------------------------------------------------------
def test_the_form_stream_gives_the_same_bytes_whatever_the_chunking() -> None:
    rng = random.Random(0)
    spec = FormSpec("image", text_fields=frozenset({"top_k"}))
    payload = bytes(rng.getrandbits(8) for _ in range(20_000)) + b"\r\n--xyzz"  # near-boundary
    body = _multipart([("image", "../../etc/passwd", payload), ("top_k", None, b"3")])
    whole = sanitize_form(body, CT, spec)
    assert b"passwd" not in whole and payload in whole
    for _ in range(200):
        stream, out, i = FormStream(CT, spec, 1 << 20), [], 0
        while i < len(body):
            n = rng.randint(1, 700)
            out += stream.feed(body[i : i + n])
            i += n
        stream.finish()
        assert b"".join(out) == whole


def test_a_file_part_over_the_limit_fails_as_soon_as_its_bytes_pass_it() -> None:
    spec = FormSpec("images", many=True, max_parts=4)
    stream = FormStream(CT, spec, max_file_bytes=10_000)
    stream.feed(b'--xyzzy\r\nContent-Disposition: form-data; name="images"; filename="a"\r\n\r\n')
    fed = 0
    with pytest.raises(InputError) as err:
        for _ in range(100):  # would be 100 kB
            stream.feed(b"\0" * 1000)
            fed += 1000
    assert err.value.status == 413
    assert fed <= 10_000 + 1000  # refused within one chunk of the limit
    assert "the file in field 'images' (part 1) is over the limit of 10000 bytes" in str(err.value)
    assert "MAMMO_MAX_UPLOAD_BYTES" in str(err.value)


def test_form_faults_are_found_at_their_header() -> None:
    spec = FormSpec("image", max_parts=2)
    stream = FormStream(CT, spec, 1 << 20)
    with pytest.raises(InputError, match="unexpected field 'evil'"):
        stream.feed(b'--xyzzy\r\nContent-Disposition: form-data; name="evil"\r\n\r\n')
    with pytest.raises(InputError, match="truncated"):
        sanitize_form(_multipart([("image", "a", b"x")])[:-12], CT, spec)
    with pytest.raises(InputError, match="over the limit of 1024 bytes"):
        text = FormSpec("image", text_fields=frozenset({"top_k"}))
        sanitize_form(_multipart([("image", "a", b"x"), ("top_k", None, b"9" * 2000)]), CT, text)


# --- the budgets -----------------------------------------------------------------------------
def test_budgets_answer_busy_with_retry_after_and_never_starve() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(1000, wait_s=0.05, retry_after=7)
        await budget.acquire(800)
        with pytest.raises(BusyError) as err:
            await budget.acquire(300)
        assert err.value.status == 503 and err.value.retry_after == 7
        assert "server busy" in str(err.value) and "800 of 1000" in str(err.value)
        waiter = asyncio.ensure_future(budget.acquire(300, wait_s=5))
        await asyncio.sleep(0.01)
        budget.release(800)
        await waiter  # granted once the room is there
        assert budget.in_use == 300
        budget.release(300)

        with pytest.raises(InputError, match="MAMMO_SERVE_MEMORY_BUDGET") as never:
            async with budget.hold(1001, "a body"):
                pass
        assert never.value.status == 413  # can never fit: not a 503
        pixels = PixelBudget(budget, per_request=50)
        with pytest.raises(InputError, match="per-request budget of 50") as err2:
            async with pixels.hold(60):
                pass
        assert err2.value.status == 413
        async with pixels.hold(60, cap=80, bytes_per_pixel=14):  # a film: larger cap and cost
            assert budget.in_use == 60 * 14
        assert budget.in_use == 0

    asyncio.run(scenario())


def test_the_guard_and_the_service_share_one_budget() -> None:
    assert shared_budget(5000, 1.0, 3) is shared_budget(5000, 1.0, 3)


def test_admission_refuses_one_more_without_holding_anything() -> None:
    films = Admission(1, "film analyses", retry_after=4)
    films.enter()
    with pytest.raises(BusyError, match=r"1 film analyses already in progress \(limit 1\)"):
        films.enter()
    films.leave()
    films.enter()
    assert films.active == 1


# --- /analyze bounds -------------------------------------------------------------------------
def test_window_count_is_the_grid_without_building_it() -> None:
    from mammo_pipeline.analysis.bounds import window_count

    rng = random.Random(1)
    for _ in range(500):
        rows, cols, frac = rng.randint(1, 9000), rng.randint(1, 9000), rng.uniform(0.05, 1.0)
        stride = max(1, round(299 * frac))
        expected = len(window_starts(rows, 299, stride)) * len(window_starts(cols, 299, stride))
        assert window_count(rows, cols, frac) == expected


def test_the_resampled_size_is_refused_before_any_pixel_is_resampled() -> None:
    """A 1 x 100000 line at 2.0 mm/px would be 20 x 2,000,000 px at 0.1 mm/px (40 M px;
    measured 2.3 GB before its 422 in the service): refused from the size alone."""
    pixels = np.full((1, 100_000), 200, np.uint8)
    with pytest.raises(FilmTooLargeError, match="MAMMO_ANALYSIS_MAX_PIXELS") as err:
        analyze(pixels, predict_batch=lambda x: np.zeros(len(x)), image_size=32, threshold=0.5,
                pixel_spacing_mm=2.0, max_pixels=10_000_000)  # fmt: skip
    assert err.value.status == 413
    assert "2000000x20 = 40000000 px" in str(err.value)


def test_too_many_windows_name_the_limit_and_the_stride() -> None:
    with pytest.raises(TooManyWindowsError) as err:
        check_film_bounds(6300, 6000, 0.1, 0.05, max_pixels=40_000_000, max_windows=2000)
    msg = str(err.value)
    assert err.value.status == 422
    assert "stride_fraction 0.05 (15 px)" in msg and "limit of 2000 windows" in msg
    assert "MAMMO_ANALYSIS_MAX_WINDOWS" in msg and "or more fits" in msg
    rows, cols, windows = check_film_bounds(
        6300, 6000, 0.1, 0.5, max_pixels=40_000_000, max_windows=2000
    )
    assert (rows, cols) == (6000, 6300) and windows <= 2000


def test_an_analysis_over_its_time_budget_stops_with_a_clear_error() -> None:
    from mammo_pipeline.data.synthetic_film import make_film

    film = make_film(1200, 800, lesion="none", seed=1).pixels
    calls = []

    def slow(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(0.2)
        return np.full(len(x), 0.1)

    with pytest.raises(AnalysisTimeError) as err:
        analyze(film, predict_batch=slow, image_size=32, threshold=0.5, batch_size=2,
                time_budget_s=0.1)  # fmt: skip
    assert err.value.status == 422
    assert "time budget of 0.1 s (MAMMO_ANALYSIS_TIME_BUDGET_S)" in str(err.value)
    assert "stride of 150 px" in str(err.value) and "larger stride_fraction" in str(err.value)
    assert len(calls) < 10  # stopped between batches, not after all of them
