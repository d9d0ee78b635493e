"""benchmarks/gpu.py, the GPU worker's benchmark, runs its quick mode here on the CPU with
``KERAS_BACKEND=jax`` and no TensorFlow, so it is ready the day a GPU is lent (issue #20,
item 7). Timings are printed, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _module():
    return load_script("benchmarks/gpu.py", "gpu_benchmark")


def test_flops_count_matches_vgg16s_published_figure() -> None:
    """VGG16's convolutions at 224 px are 15.35 GMACs (30.7 GFLOPs): the count MFU uses."""
    gpu = _module()
    conv_only = gpu.vgg16_forward_flops(224, head_units=()) - 2.0 * 512  # minus the 512->1 unit
    assert conv_only / 1e9 == pytest.approx(30.69, rel=0.005)
    assert gpu.peak_tflops("NVIDIA H200", "bfloat16", None) == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe", "float32", None) == 378.0
    assert gpu.peak_tflops("cpu", "bfloat16", None) is None


@pytest.mark.slow
def test_quick_mode_runs_on_jax_without_tensorflow(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--peak-tflops", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    result = json.loads(out.read_text())
    assert result["backend"] == "jax" and result["tensorflow_imported"] is False
    assert result["precision"] == "bfloat16" and result["jit"] is True
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
    assert result["train_mfu"] > 0 and "SYNTHETIC" in result["data"]
    assert "TensorFlow imported: no" in proc.stdout and "images/s" in proc.stdout
