"""The deploy smoke test: a fixed image through the new backend's ``/predict`` must name the
right version and give the in-process probability of the same registry version."""

from __future__ import annotations

import io

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.config import Settings
from mammo_pipeline.serving.state import DeployError


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


def smoke_test(settings: Settings, url: str, version: str) -> tuple[float, float]:
    """POST the smoke image to ``url``; check version and probability; (served, expected)."""
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
        raise DeployError(f"smoke request got HTTP {resp.status_code}: {resp.text[:300]}")
    body = resp.json()
    if str(body.get("model_version")) != str(version):
        raise DeployError(f"service answers as version {body.get('model_version')}, not {version}")
    served = float(body["probability"])
    expected = expected_probability(settings, version, image)
    if not abs(served - expected) <= settings.smoke_tolerance:
        raise DeployError(
            f"served probability {served:.8f} differs from in-process {expected:.8f} "
            f"by more than {settings.smoke_tolerance:g}"
        )
    return served, expected
