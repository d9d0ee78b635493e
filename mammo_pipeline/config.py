"""The one configuration object of mammo-mlops.

Values come, highest priority first, from: keyword arguments, ``MAMMO_*`` environment
variables, an optional TOML file named by ``MAMMO_CONFIG_FILE`` and the defaults below.
The defaults run everything on one machine (SQLite, local files). Reading the settings has
no side effects: no directory is created and no tracking URI is set here.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "MAMMO_CONFIG_FILE"


class Settings(BaseSettings):
    """All tunables of the platform, grouped by the reason they change."""

    model_config = SettingsConfigDict(
        env_prefix="MAMMO_", extra="ignore", validate_default=True, frozen=True
    )

    # --- where data lives -------------------------------------------------------------
    data_dir: Path = Path("data")
    landing_dir: Path | None = Field(None, description="new tfrecords land here")
    validated_dir: Path | None = Field(None, description="files that passed validation")
    quarantine_dir: Path | None = Field(None, description="rejected files + reason.json")
    test_dir: Path | None = Field(None, description="fixed held-out test split")
    film_test_dir: Path | None = Field(
        None, description="whole films with lesion boxes for film-level evaluation (film set)"
    )
    reports_dir: Path | None = Field(None, description="validation reports, Data Docs")
    expectations_dir: Path = Path("expectations")

    # --- tracking and registry ---------------------------------------------------------
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    mlflow_artifact_location: str = "./mlartifacts"
    mlflow_experiment: str = "mammo-vgg16"
    registered_model_name: str = "mammo-vgg16"
    mlflow_tracking_username: str | None = Field(
        None,
        description="user on an MLflow server with authentication (basic-auth app); child "
        "processes get it as MLflow's own MLFLOW_TRACKING_USERNAME",
    )
    mlflow_tracking_password: SecretStr | None = Field(
        None, description="that user's password (MLFLOW_TRACKING_PASSWORD in child processes)"
    )

    # --- model and training ------------------------------------------------------------
    image_size: int = Field(299, ge=16, le=1024, description="model input side in pixels")
    weights: str = Field(
        "imagenet", description="'imagenet', 'none' or a path to a local VGG16 notop .h5"
    )
    head_units: tuple[int, int] = (256, 128)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    trainable_blocks: int = Field(0, ge=0, le=5, description="top VGG16 blocks fine-tuned")
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(10, ge=1)
    fine_tune_epochs: int = Field(0, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    fine_tune_learning_rate: float = Field(1e-5, gt=0)
    early_stopping_patience: int = Field(3, ge=1)
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    max_records: int | None = Field(None, ge=1, description="cap on training records")
    augment: bool = True
    cache: Literal["none", "memory", "disk"] = "memory"
    shuffle_buffer: int = Field(2048, ge=1)
    seed: int = 42
    target_recall: float = Field(0.85, gt=0.0, le=1.0, description="threshold choice")

    # --- gate --------------------------------------------------------------------------
    min_precision: float = Field(0.30, ge=0.0, le=1.0)
    min_recall: float = Field(0.80, ge=0.0, le=1.0)
    regression_tolerance: float = Field(
        0.02, ge=0.0, le=1.0, description="largest loss allowed vs champion and baseline"
    )
    require_approval: bool = False
    approvers: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="people who may approve, reject, roll back or pin a version, in Airflow "
        "(the approval's assignees) and on the CLI; comma-separated names or a JSON list "
        "(empty: anyone allowed to act on the DAG or the registry)",
    )
    approval_timeout_hours: float = Field(
        168.0,
        gt=0.0,
        le=24 * 365,
        description="how long a candidate waits for approval in Airflow; no answer by "
        "then is recorded as a rejection (Reject is the default answer)",
    )
    gate_lower_bound: bool = Field(
        False,
        description="absolute thresholds must be cleared by the Wilson lower bound, "
        "not only by the point estimate",
    )
    gate_bootstrap_resamples: int = Field(1000, ge=1000, le=100_000)
    gate_bootstrap_seed: int = 0
    gate_confidence: float = Field(0.95, ge=0.5, lt=1.0)
    registry_lock_uri: str | None = Field(
        None,
        description="PostgreSQL URI whose advisory lock serialises gate-and-promote "
        "(default: the tracking store when it is PostgreSQL, else a file lock)",
    )
    registry_lock_timeout_s: float = Field(600.0, gt=0.0)
    gate_rescore_tiles: int = Field(
        128,
        ge=1,
        description="held-out test tiles the gate re-scores with the registered model (a "
        "random subset, seed drawn at gate time) and compares with the logged predictions; "
        "a number above the test set's size re-scores every tile (docs/threat-model.md: "
        "why 128)",
    )
    gate_rescore_tolerance: float = Field(
        1e-4,
        gt=0.0,
        le=0.01,
        description="largest |score difference| per re-scored tile (float32 round-off of "
        "another batch composition is <= 6e-8; raise it only when evaluation and gate run "
        "on different device classes, e.g. TF32/float16 on a GPU vs a CPU)",
    )

    # --- signing (common/signing.py; neither set: a pair under <data dir>/keys) ---------
    signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) of the processes that evaluate, gate and "
        "approve (the Airflow workers)",
    )
    trusted_keys: Annotated[tuple[Path, ...], NoDecode] = Field(
        (),
        description="public keys (PEM files, or folders of *.pub) whose signatures the "
        "deployer and the service accept; comma-separated; several for key rotation",
    )

    # --- validation and drift ----------------------------------------------------------
    positive_fraction_min: float = Field(0.02, ge=0.0, le=1.0)
    positive_fraction_max: float = Field(0.50, ge=0.0, le=1.0)
    drift_psi_threshold: float = Field(0.2, ge=0.0)
    drift_blocks: bool = False
    drift_class_balance_threshold: float = Field(
        0.10, ge=0.0, le=1.0, description="largest allowed change of the positive fraction"
    )
    drift_bins: int = Field(20, ge=2, le=256, description="bins of the pixel-mean histogram")
    data_docs_dir: Path | None = Field(None, description="GX Data Docs (default reports/data_docs)")
    validation_workers: int = Field(
        0, ge=0, description="processes profiling files in parallel; 0 = auto, 1 = in-process"
    )
    landing_quiet_seconds: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description="a landing file modified more recently is validated only if it stays "
        "unchanged that long (else it is still being written: left for the next run)",
    )
    validate_every_minutes: int = Field(
        10,
        ge=1,
        le=24 * 60,
        description="how often Airflow's mammo_validate_incoming checks the landing directory "
        "(its schedule, read when the DAG file is parsed); a manual trigger validates at once",
    )

    # --- serving -----------------------------------------------------------------------
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(3000, ge=1, le=65535)
    api_key: str | None = Field(
        None,
        description="key required on predictions; unset with auth='key', no server starts "
        "(common.auth.NO_KEY_REFUSAL)",
    )
    auth: Literal["key", "none"] = Field(
        "key", description="'key' (default) requires api_key; 'none' explicitly serves open"
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(
        40_000_000, ge=1024, description="decompression-bomb guard: width*height cap"
    )
    # Memory bounds of the service (docs/serving-bounds.md): a busy service answers 503 with
    # Retry-After before it buffers or decodes; a request that can never fit answers 413.
    serve_inflight_bytes: int = Field(
        128 * 1024 * 1024,
        ge=64 * 1024,
        description="largest body one request may send: min(max parts x max_upload_bytes, this)",
    )
    serve_memory_budget: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="bytes all concurrent requests may hold: bodies (x2: buffer and BentoML's "
        "copy) and decoded images (films 14 B per pixel of the larger of decoded/resampled)",
    )
    serve_max_analyses: int = Field(
        1, ge=1, le=64, description="whole-film analyses admitted at once; one more is a 503"
    )
    serve_busy_wait_s: float = Field(
        2.0, ge=0.0, le=30.0, description="longest wait for a share of a budget before a 503"
    )
    serve_retry_after_s: int = Field(
        5, ge=1, le=3600, description="the Retry-After (seconds) a 503 'busy' answer carries"
    )
    analysis_max_pixels: int = Field(
        40_000_000,
        ge=1024,
        description="largest film /analyze resamples, in pixels at the training scale (0.1 "
        "mm/px), checked from the header and the spacing before decoding",
    )
    analysis_max_windows: int = Field(
        2000, ge=1, description="most windows /analyze lays over one film (grid, any coverage)"
    )
    analysis_time_budget_s: float = Field(
        40.0,
        gt=0.0,
        le=3600.0,
        description="longest scoring of one film; over it /analyze answers 422 naming it",
    )
    serve_version: str | None = Field(
        None, description="registry version to serve; unset = the 'champion' alias"
    )
    bentoml_home: Path | None = Field(None, description="BentoML home (model store)")
    serve_max_batch_size: int = Field(32, ge=1, le=1024)
    serve_max_latency_ms: float = Field(5.0, ge=0.0, le=10_000.0)
    serve_side_port: int = Field(3001, ge=0, le=65535, description="green port; 0 = any")
    serve_ready_timeout_s: float = Field(180.0, gt=0.0)
    deploy_records_registry: bool = Field(
        True,
        description="the deployer writes the deploy=live|failed tags and moves the champion "
        "back after a failed deploy; false on a serving host whose MLflow user is read-only "
        "(compose): the DAGs' record_deploy task on a writer's queue records them",
    )
    smoke_tolerance: float = Field(1e-5, gt=0.0)

    # --- orchestration -----------------------------------------------------------------
    airflow_home: Path = Path(".airflow")

    # --- monitoring (docs/monitoring.md; unset store = SQLite under <data dir>/monitoring/) -----
    monitor_store_uri: str | None = Field(None, description="postgresql://... or sqlite:///PATH")
    monitor_queue_size: int = Field(10_000, ge=1, description="service log queue; then drops")
    monitor_log_predictions: bool = Field(True, description="the service logs each answer")
    monitor_window_hours: float = Field(24.0, gt=0.0, le=24 * 90)
    monitor_since_days: float = Field(7.0, gt=0.0, le=3650, description="default report period")
    monitor_min_window_size: int = Field(100, ge=10, description="tiles to judge a window")
    monitor_psi_threshold: float = Field(0.2, gt=0.0, description="drift: PSI above AND p below")
    monitor_p_value: float = Field(0.01, gt=0.0, lt=0.5, description="KS and rate tests")
    monitor_consecutive_windows: int = Field(2, ge=1, le=100, description="drifting: alert")
    monitor_retention_days: float = Field(180.0, gt=0.0, description="older records deleted")
    monitor_every_minutes: int = Field(60, ge=1, le=24 * 60, description="mammo_monitor DAG")
    retrain_on_alert: bool = Field(False, description="mammo_retrain also on the alert Asset")

    @field_validator("weights")
    @classmethod
    def _weights_known(cls, value: str) -> str:
        if value.lower() in {"imagenet", "none"}:
            return value.lower()
        if not value.endswith((".h5", ".keras", ".weights.h5")):
            raise ValueError(
                "weights must be 'imagenet', 'none' or a path to a VGG16 weights .h5 file, "
                f"got {value!r}"
            )
        return value

    @field_validator("approvers", "trusted_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """``MAMMO_APPROVERS=alice,bob`` / ``MAMMO_TRUSTED_KEYS=a.pub,b.pub`` (or a JSON list)
        -> a tuple of stripped, non-empty items (a plain name is a list of one)."""
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return value

    @model_validator(mode="after")
    def _check_api_key(self) -> Settings:
        if self.api_key is not None and not self.api_key.strip():
            if self.auth != "none":
                raise ValueError(
                    "MAMMO_API_KEY is empty or whitespace, which would silently disable "
                    "authentication: set a real key, or MAMMO_AUTH=none to serve without one"
                )
            object.__setattr__(self, "api_key", None)
        if self.auth == "none" and self.api_key:
            raise ValueError("MAMMO_AUTH=none contradicts MAMMO_API_KEY: choose one")
        return self

    @model_validator(mode="after")
    def _check_mlflow_credentials(self) -> Settings:
        if (self.mlflow_tracking_username is None) != (self.mlflow_tracking_password is None):
            raise ValueError(
                "MAMMO_MLFLOW_TRACKING_USERNAME and MAMMO_MLFLOW_TRACKING_PASSWORD go together: "
                "set both or neither"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key)

    @model_validator(mode="after")
    def _check_bands(self) -> Settings:
        if self.positive_fraction_min > self.positive_fraction_max:
            raise ValueError("positive_fraction_min must not exceed positive_fraction_max")
        return self

    # Directories derived from data_dir unless set explicitly.
    def _under_data(self, value: Path | None, name: str) -> Path:
        return value if value is not None else self.data_dir / name

    @property
    def landing(self) -> Path:
        return self._under_data(self.landing_dir, "landing")

    @property
    def validated(self) -> Path:
        return self._under_data(self.validated_dir, "validated")

    @property
    def quarantine(self) -> Path:
        return self._under_data(self.quarantine_dir, "quarantine")

    @property
    def test_split(self) -> Path:
        return self._under_data(self.test_dir, "test")

    @property
    def film_test_split(self) -> Path:
        """The film set of film-level evaluation (:mod:`mammo_pipeline.data.film_set`)."""
        return self._under_data(self.film_test_dir, "test_films")

    @property
    def reports(self) -> Path:
        return self._under_data(self.reports_dir, "reports")

    @property
    def bentoml_store(self) -> Path:
        """BENTOML_HOME used by the serving stage (its model store lives under it)."""
        return self._under_data(self.bentoml_home, "bentoml")

    @property
    def serving_dir(self) -> Path:
        """State (live.json) and logs of locally deployed services."""
        return self.data_dir / "serving"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def describe_validation_error(exc: Exception) -> str:
    """A pydantic ValidationError of the settings as one line naming each field and problem."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for e in errors():
        field = ".".join(str(x) for x in e.get("loc", ()))
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if field:
            parts.append(f"{field}={e.get('input')!r}: {msg}")
        else:
            parts.append(msg)
    return "invalid setting: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
