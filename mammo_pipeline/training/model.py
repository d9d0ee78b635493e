"""The VGG16 transfer-learning classifier, in pure Keras 3 (any backend, no TensorFlow calls).

Structure of the full model (layer names are part of the contract used by training)::

    image (S, S, 1) float32 raw 0..255
      -> to_rgb          Concatenate: the gray channel repeated to three channels
      -> vgg_preprocess  Normalization: VGG16 "caffe" preprocessing (BGR mean subtraction;
                         the channels are equal, so the RGB->BGR swap is a no-op)
      -> vgg16           keras.applications.VGG16(include_top=False)
      -> pool            GlobalAveragePooling2D -> (512,) features
      -> head            Dense(units[0]) + Dropout -> Dense(units[1]) + Dropout
                         -> Dense(1, sigmoid, float32)

Serving therefore sends raw pixels (see :mod:`mammo_pipeline.data.preprocess`). The
``pool`` output is what feature caching computes once; ``head`` is a sub-model that is
trained on cached features or as part of the full model, so the logged model has the same
structure either way.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mammo_pipeline.errors import ConfigError

VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: VGG16 "caffe" preprocessing means, BGR order.
VGG16_MEANS = (103.939, 116.779, 123.68)
FEATURE_LAYER = "pool"
BASE_LAYER = "vgg16"
HEAD_LAYER = "head"
VGG16_BLOCKS = 5
_WEIGHTS_HOST = ("storage.googleapis.com", 443)


@dataclass(frozen=True)
class ModelSpec:
    """What defines the architecture (everything else is training)."""

    image_size: int = 299
    weights: str = "imagenet"  # "imagenet", "none" or a path to a VGG16 notop .h5
    head_units: tuple[int, int] = (256, 128)
    dropout: float = 0.5


def keras_cache_file() -> Path:
    """Where Keras keeps the downloaded ImageNet VGG16 notop weights (``$KERAS_HOME`` or
    ``~/.keras``, as Keras resolves it)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser() / "models" / VGG16_NOTOP_FILE


def _offline_message(reason: str) -> str:
    return (
        f"ImageNet VGG16 weights requested but {reason}. Download {VGG16_NOTOP_FILE} "
        f"(https://storage.googleapis.com/tensorflow/keras-applications/vgg16/) into "
        f"{keras_cache_file().parent}/, or set MAMMO_WEIGHTS=/path/to/{VGG16_NOTOP_FILE}, "
        "or MAMMO_WEIGHTS=none for random initialisation (not a useful model)."
    )


def _host_reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(weights: str) -> str | None:
    """The ``weights=`` argument for ``keras.applications.VGG16``, checked up front.

    ``none`` -> None; a path must exist; ``imagenet`` uses the Keras cache file when it is
    there, else a quick reachability check of the download host (never a long hang), so an
    offline machine gets a :class:`ConfigError` explaining how to provide the file.
    """
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        cached = keras_cache_file()
        if cached.is_file():
            return str(cached)
        if os.environ.get("MAMMO_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ConfigError(_offline_message(f"{cached} is missing and MAMMO_OFFLINE is set"))
        if not _host_reachable(_WEIGHTS_HOST):
            raise ConfigError(_offline_message(f"{cached} is missing and the network is down"))
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"VGG16 weights file {path} does not exist. Set MAMMO_WEIGHTS to an existing "
            f"{VGG16_NOTOP_FILE}, to 'imagenet' or to 'none'."
        )
    return str(path)


def weights_source(weights: str) -> str:
    """The value of the ``weights_source`` tag: 'imagenet', 'none' or the file path."""
    return weights.lower() if weights.lower() in ("imagenet", "none") else str(weights)


def build_base(image_size: int, weights: str):
    """VGG16 convolutional base for ``image_size`` x ``image_size`` x 3 inputs."""
    import keras

    resolved = resolve_weights(weights)
    try:
        return keras.applications.VGG16(
            include_top=False,
            weights=resolved,
            input_shape=(image_size, image_size, 3),
            name=BASE_LAYER,
        )
    except Exception as exc:  # download failure, wrong file
        if weights.lower() == "imagenet" and resolved == "imagenet":
            raise ConfigError(_offline_message(f"the download failed ({exc})")) from exc
        raise ConfigError(f"could not load VGG16 weights from {resolved}: {exc}") from exc


def build_head(n_features: int, head_units: tuple[int, int], dropout: float):
    """Feature normalisation, two dense layers with dropout and one float32 sigmoid output."""
    import keras
    from keras import layers

    inp = keras.Input((n_features,), name="features")
    # Pooled VGG16 features differ in scale by orders of magnitude (more so with random
    # weights); normalising them lets the dense layers train at one learning rate.
    x = layers.BatchNormalization(name="feature_norm")(inp)
    for i, units in enumerate(head_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    out = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inp, out, name=HEAD_LAYER)


def build_model(spec: ModelSpec):
    """The full model: raw one-channel pixels in, one sigmoid probability out."""
    import keras
    from keras import layers

    s = spec.image_size
    inp = keras.Input((s, s, 1), dtype="float32", name="image")
    rgb = layers.Concatenate(axis=-1, name="to_rgb")([inp, inp, inp])
    x = layers.Normalization(
        axis=-1, mean=list(VGG16_MEANS), variance=[1.0, 1.0, 1.0], name="vgg_preprocess"
    )(rgb)
    base = build_base(s, spec.weights)
    x = base(x)
    feats = layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(x)
    head = build_head(int(feats.shape[-1]), spec.head_units, spec.dropout)
    out = head(feats)
    model = keras.Model(inp, out, name="mammo_vgg16")
    set_trainable_blocks(model, 0)
    return model


def feature_extractor(model):
    """A model sharing ``model``'s layers that stops at the pooled VGG16 features."""
    import keras

    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output, name="features")


def head_of(model):
    return model.get_layer(HEAD_LAYER)


def set_trainable_blocks(model, blocks: int) -> None:
    """Freeze the VGG16 base except its top ``blocks`` conv blocks (0 = fully frozen)."""
    if not 0 <= blocks <= VGG16_BLOCKS:
        raise ConfigError(f"trainable_blocks must be within 0..{VGG16_BLOCKS}, got {blocks}")
    base = model.get_layer(BASE_LAYER)
    first_trainable = VGG16_BLOCKS - blocks + 1
    base.trainable = blocks > 0
    for layer in base.layers:
        block = _block_number(layer.name)
        layer.trainable = blocks > 0 and block is not None and block >= first_trainable


def _block_number(layer_name: str) -> int | None:
    if layer_name.startswith("block") and "_" in layer_name:
        try:
            return int(layer_name[len("block") : layer_name.index("_")])
        except ValueError:
            return None
    return None
