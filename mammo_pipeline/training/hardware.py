"""What hardware the Keras backend sees, and the numeric policy that follows from it."""

from __future__ import annotations


def gpu_available() -> bool:
    """Whether the Keras backend sees a GPU (TensorFlow or JAX; False on any doubt)."""
    import keras

    try:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if keras.backend.backend() == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if keras.backend.backend() == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver means no GPU
        return False
    return False


def setup_precision() -> bool:
    """mixed_float16 on a GPU, float32 elsewhere; returns whether mixed precision is on."""
    import keras

    mixed = gpu_available()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed
