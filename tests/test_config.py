from pathlib import Path

import pytest
from pydantic import ValidationError

from mammo_pipeline.config import Settings


def test_defaults_work_on_one_machine():
    s = Settings()
    assert s.mlflow_tracking_uri == "sqlite:///mlflow.db"
    assert s.landing == Path("data/landing")
    assert s.validated == Path("data/validated")
    assert s.quarantine == Path("data/quarantine")
    assert s.registered_model_name == "mammo-vgg16"


def test_env_vars_override(monkeypatch):
    monkeypatch.setenv("MAMMO_DATA_DIR", "/srv/mammo")
    monkeypatch.setenv("MAMMO_IMAGE_SIZE", "64")
    monkeypatch.setenv("MAMMO_LANDING_DIR", "/incoming")
    s = Settings()
    assert s.image_size == 64
    assert s.landing == Path("/incoming")
    assert s.validated == Path("/srv/mammo/validated")


def test_config_file_and_priority(monkeypatch, tmp_path):
    cfg = tmp_path / "mammo.toml"
    cfg.write_text('image_size = 128\nepochs = 3\nweights = "none"\n')
    monkeypatch.setenv("MAMMO_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("MAMMO_EPOCHS", "5")
    s = Settings()
    assert (s.image_size, s.epochs, s.weights) == (128, 5, "none")


def test_missing_config_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMMO_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Settings()


@pytest.mark.parametrize(
    "field,value",
    [("image_size", 4), ("weights", "resnet"), ("dropout", 1.5), ("min_recall", 2.0)],
)
def test_bad_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_reading_settings_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    _ = (s.landing, s.validated, s.quarantine, s.reports)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_empty_api_key_is_a_startup_error_not_silently_no_auth(monkeypatch, key):
    from pydantic import ValidationError

    from mammo_pipeline.config import Settings, describe_validation_error

    monkeypatch.setenv("MAMMO_API_KEY", key)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert "MAMMO_AUTH=none" in describe_validation_error(exc.value)
    monkeypatch.setenv("MAMMO_AUTH", "none")
    s = Settings()
    assert s.api_key is None and not s.auth_enabled
    monkeypatch.setenv("MAMMO_API_KEY", "secret")
    with pytest.raises(ValidationError, match="contradicts"):
        Settings()
    monkeypatch.delenv("MAMMO_AUTH")
    assert Settings().auth_enabled
