"""The VGG16 model: input/output contract, in-model preprocessing, freezing, weight errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.errors import ConfigError
from mammo_pipeline.training import model as m


@pytest.fixture(scope="module")
def net():
    return m.build_model(m.ModelSpec(image_size=32, weights="none", head_units=(16, 8)))


def test_io_contract(net):
    assert tuple(net.input_shape) == (None, 32, 32, 1)
    assert tuple(net.output_shape) == (None, 1)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    p = np.asarray(net.predict(x, verbose=0))
    assert p.shape == (3, 1) and np.all((p >= 0) & (p <= 1))
    assert net.get_layer(m.HEAD_LAYER).layers[-1].dtype_policy.compute_dtype == "float32"


def test_preprocessing_matches_vgg16(net):
    import keras

    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    sub = keras.Model(net.inputs, net.get_layer("vgg_preprocess").output)
    ours = np.asarray(sub.predict(x, verbose=0))
    ref = keras.applications.vgg16.preprocess_input(np.repeat(x, 3, axis=-1).copy())
    np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-3)


def test_trainable_blocks(net):
    base = net.get_layer(m.BASE_LAYER)
    m.set_trainable_blocks(net, 0)
    assert not base.trainable_weights
    m.set_trainable_blocks(net, 1)
    names = {w.path.split("/")[-2] for w in base.trainable_weights}
    assert names == {"block5_conv1", "block5_conv2", "block5_conv3"}
    m.set_trainable_blocks(net, 2)
    assert len(base.trainable_weights) == 12  # 6 conv layers x (kernel, bias)
    m.set_trainable_blocks(net, 0)
    with pytest.raises(ConfigError):
        m.set_trainable_blocks(net, 6)


def test_feature_extractor_and_head_share_weights(net):
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    feats = m.feature_extractor(net).predict(x, verbose=0)
    assert feats.shape == (2, 512)
    via_head = m.head_of(net).predict(feats, verbose=0)
    np.testing.assert_allclose(via_head, net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_missing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        m.resolve_weights(str(tmp_path / "nope.h5"))


def test_imagenet_offline_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "keras" / "models" / m.VGG16_NOTOP_FILE
    monkeypatch.setattr(m, "keras_cache_file", lambda: missing)
    monkeypatch.setattr(m, "_host_reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError) as err:
        m.resolve_weights("imagenet")
    msg = str(err.value)
    assert m.VGG16_NOTOP_FILE in msg and "MAMMO_WEIGHTS=" in msg and "none" in msg


def test_imagenet_uses_cached_file(tmp_path, monkeypatch):
    cached = tmp_path / "models" / m.VGG16_NOTOP_FILE
    monkeypatch.setattr(m, "keras_cache_file", lambda: cached)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    monkeypatch.setattr(m, "_host_reachable", lambda *a, **k: pytest.fail("network used"))
    assert m.resolve_weights("imagenet") == str(cached)
    assert m.resolve_weights("none") is None


def test_model_module_is_backend_agnostic():
    source = Path(m.__file__).read_text()
    assert not re.search(r"\btf\.|import tensorflow", source)
