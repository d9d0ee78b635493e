"""The deploy smoke test: a fixed image through the new backend's ``/predict`` must name the
right version and give the in-process probability of the same registry version.

A model that outputs NaN (or anything that is not a probability) fails with "model outputs
NaN on the smoke image", whether the service refuses to answer (it never turns a non-finite
score into a label) or the in-process prediction is the one that is not finite."""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.config import Settings
from mammo_pipeline.serving.state import DeployError

_NONFINITE_HINTS = ("non-finite", "no valid score", "not a probability", "self-check")


def _nonfinite(value: object) -> str | None:
    """The value as text when it is not a finite probability in 0..1, else None."""
    import math

    if not isinstance(value, int | float) or isinstance(value, bool):
        return repr(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return str(value)
    return None


def smoke_image(size: int = 64) -> bytes:
    """A fixed, deterministic grey PNG (gradient + noise) used by every smoke test."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 60 + 120 * (xx + yy) / (2 * size) + rng.normal(0, 20, (size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def expected_probability(settings: Settings, version: str, image: bytes) -> float:
    """The in-process prediction of ``version`` (loaded from MLflow) on ``image``."""
    import numpy as np

    from mammo_pipeline.serving.image_io import decode_image, to_model_input
    from mammo_pipeline.serving.model_loader import load_from_registry

    model = load_from_registry(settings, version)
    size = int(model.input_shape[1])
    gray = decode_image(image, max_bytes=len(image) + 1, max_pixels=1 << 30)
    x = to_model_input(gray, size)[np.newaxis]
    return float(np.asarray(model.predict(x, verbose=0)).reshape(-1)[0])


def expected_in_background(settings: Settings, version: str) -> Future[float]:
    """:func:`expected_probability` of the smoke image, started now on a thread of its own.

    The deploy starts it with the green backend: loading the version in-process (a registry
    download and a Keras load) then overlaps the backend's own start-up, instead of following
    it. Its result, or its exception, is read by :func:`smoke_test`."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smoke-expected")
    try:
        return pool.submit(expected_probability, settings, version, smoke_image())
    finally:
        pool.shutdown(wait=False)


def smoke_test(
    settings: Settings, url: str, version: str, expected: Future[float] | None = None
) -> tuple[float, float]:
    """POST the smoke image to ``url``; check version and probability; (served, expected).

    ``expected``: the in-process probability already being computed
    (:func:`expected_in_background`); computed here when None."""
    import httpx

    image = smoke_image()
    try:
        resp = httpx.post(
            f"{url}/predict",
            files={"image": ("smoke.png", image, "image/png")},
            headers=auth_headers(settings.api_key),
            timeout=60.0,
        )
    except httpx.HTTPError as exc:
        raise DeployError(f"smoke request to {url} failed: {exc}") from None
    if resp.status_code != 200:
        text = resp.text[:300]
        if resp.status_code >= 500 and any(h in text for h in _NONFINITE_HINTS):
            raise DeployError(
                f"model outputs NaN on the smoke image (HTTP {resp.status_code}: {text})"
            )
        raise DeployError(f"smoke request got HTTP {resp.status_code}: {text}")
    try:
        body = resp.json()
    except ValueError:
        raise DeployError(f"smoke answer is not JSON: {resp.text[:300]}") from None
    if not isinstance(body, dict):
        raise DeployError(f"smoke answer is not a JSON object: {resp.text[:300]}")
    if str(body.get("model_version")) != str(version):
        raise DeployError(f"service answers as version {body.get('model_version')}, not {version}")
    bad = _nonfinite(body.get("probability"))
    if bad is not None:
        raise DeployError(f"model outputs NaN on the smoke image (served probability {bad})")
    served = float(body["probability"])
    if expected is None:
        in_process = expected_probability(settings, version, image)
    else:
        in_process = expected.result()
    bad = _nonfinite(in_process)
    if bad is not None:
        raise DeployError(f"model outputs NaN on the smoke image (in-process probability {bad})")
    if not abs(served - in_process) <= settings.smoke_tolerance:
        raise DeployError(
            f"served probability {served:.8f} differs from in-process {in_process:.8f} "
            f"by more than {settings.smoke_tolerance:g}"
        )
    return served, in_process
