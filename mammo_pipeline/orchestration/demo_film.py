"""The demo's whole-film part: the film-level figures of a training run, and a SYNTHETIC
whole mammogram analysed by the live service (``mammo predict --heatmap``, ``POST /analyze``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mammo_pipeline.config import Settings

BIN = Path(sys.executable).parent


def say_film_figures(settings: Settings, run_id: str | None, say: Callable[[str], None]) -> None:
    """The run's film-level figures (whole SYNTHETIC films through analyze())."""
    from mammo_pipeline.common.mlflow_access import mlflow_client

    if not run_id:
        return
    m = mlflow_client(settings).get_run(run_id).data.metrics
    if "film_roc_auc" not in m:
        say("    (no film-level metrics on this run)")
        return
    say(
        f"    film level, SYNTHETIC films ({m.get('film_n', 0):.0f} test films): film_roc_auc "
        f"{m['film_roc_auc']:.3f} [{m.get('film_roc_auc_low', float('nan')):.3f}, "
        f"{m.get('film_roc_auc_high', float('nan')):.3f}], FROC sens@1FP "
        f"{m.get('film_froc_sens_at_1fp', float('nan')):.3f}, top-1 hit rate "
        f"{m.get('film_top1_hit_rate', float('nan')):.3f}, film threshold "
        f"{m.get('film_threshold', float('nan')):.3f}"
    )


def analyze_whole_film(
    url: str, demo_dir: Path, say: Callable[[str], None], env: dict[str, str] | None = None
) -> None:
    """Whole-mammogram analysis on the live service: a SYNTHETIC 2000x1200 film with a planted
    mass goes through ``mammo predict --heatmap`` (``POST /analyze``)."""
    from mammo_pipeline.data.provenance import png_bytes
    from mammo_pipeline.data.synthetic_film import make_film

    film = make_film(2000, 1200, lesion="mass", seed=1, mm_per_px=0.1)
    path = demo_dir / "synthetic_film.png"
    path.write_bytes(png_bytes(film.pixels, synthetic=True))  # its provenance travels with it
    heatmap = demo_dir / "synthetic_film_heatmap.png"
    out = subprocess.run(
        [str(BIN / "mammo"), "predict", str(path), "--url", url, "--heatmap", str(heatmap),
         "--pixel-spacing-mm", "0.1", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )  # fmt: skip
    if out.returncode != 0:
        say(f"whole-mammogram analysis failed: {(out.stderr or out.stdout).strip()[-300:]}")
        return
    try:
        answer = json.loads(out.stdout[out.stdout.index("{") :])
    except ValueError:
        answer = {}
    regions = answer.get("regions") or []
    top = regions[0] if regions else {}
    box = [top.get(k) for k in ("x0", "y0", "x1", "y1")] if top else None
    x0, y0, x1, y1 = film.lesion_box
    say(
        f"whole SYNTHETIC mammogram ({path.name}, 2000x1200, mass planted at x {x0}-{x1}, "
        f"y {y0}-{y1}): score {answer.get('score')} ({answer.get('aggregation')}), "
        f"{answer.get('tiles_scored')} tiles scored, top region x0,y0,x1,y1 = {box} "
        f"(p={top.get('probability')})"
    )
    say(f"heatmap    : {heatmap}")
