"""Open the committed Great Expectations file context and run its checkpoint on a profile.

The context in ``expectations/gx/`` holds everything GX needs: the pandas data source
``mammo_profiles`` with the dataframe asset ``tfrecord_records`` and its whole-dataframe batch
definition, the suite ``tfrecord_contract`` (the rules), the validation definition that pairs
them and the checkpoint ``landing_checkpoint`` whose ``UpdateDataDocsAction`` renders Data Docs.
Nothing here defines a rule. Runtime output goes under the reports directory: the context's
config refers to ``${mammo_validation_results_dir}`` and ``${mammo_data_docs_dir}``, which are
supplied as GX's ``runtime_environment``, so validating never writes into ``expectations/``.
After each build the pages are pointed at local copies of their CSS/JS
(:mod:`.docs_assets`), so Data Docs render without internet.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError
from mammo_pipeline.validation import docs_assets

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationValidationResult

DATASOURCE = "mammo_profiles"
ASSET = "tfrecord_records"
BATCH_DEFINITION = "whole_file"
SUITE = "tfrecord_contract"
VALIDATION_DEFINITION = "tfrecord_records_contract"
CHECKPOINT = "landing_checkpoint"
DATA_DOCS_SITE = "mammo_data_docs"

_REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)
#: GX's loggers that print bookkeeping at INFO on import: its public-API registry logs one
#: "Skipping registering function ..." line per decorated function (~200 in an Airflow task
#: log, where INFO is shown). Their warnings and errors still come through.
GX_CHATTY_LOGGERS = ("great_expectations._docs_decorators",)


def quiet_gx_logging() -> None:
    """Raise GX's chatty loggers to WARNING (before GX is imported; idempotent)."""
    for name in GX_CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def data_docs_dir(settings: Settings) -> Path:
    """Where Data Docs are built: ``MAMMO_DATA_DOCS_DIR`` or ``<reports>/data_docs``."""
    return Path(settings.data_docs_dir or settings.reports / "data_docs").absolute()


def validation_results_dir(settings: Settings) -> Path:
    """Where GX stores the JSON validation results (under the reports directory)."""
    return (settings.reports / "gx_validations").absolute()


def expectations_root(settings: Settings) -> Path:
    """The GX project root; a relative setting is tried from the working directory, then from
    the repository this package was installed from (so a DAG task finds it from any cwd)."""
    root = settings.expectations_dir
    candidates = [root] if root.is_absolute() else [Path.cwd() / root, _REPO_ROOT / root]
    for candidate in candidates:
        if (candidate / "gx" / "great_expectations.yml").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"no Great Expectations context found (looked for gx/great_expectations.yml in {tried}); "
        "set MAMMO_EXPECTATIONS_DIR to the committed expectations/ directory"
    )


@dataclass(slots=True)
class ContractOutcome:
    """What one checkpoint run said about one profile."""

    success: bool
    results: list[ExpectationValidationResult]
    data_docs_page: str | None
    run_time: datetime


class ContractChecker:
    """The committed suite, run through the committed checkpoint (one instance per run).

    ``docs_assets_dir`` holds the npm packages whose files replace the Data Docs' CDN links
    (default: ``docs-assets/node_modules``, filled by ``make install``).
    """

    def __init__(
        self, settings: Settings, docs_assets_dir: Path = docs_assets.DEFAULT_ASSETS_DIR
    ) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        quiet_gx_logging()
        import great_expectations as gx

        self.root = expectations_root(settings)
        self.docs_dir = data_docs_dir(settings)
        self.docs_assets_dir = docs_assets_dir
        self.results_dir = validation_results_dir(settings)
        self.parameters = {
            "positive_fraction_min": settings.positive_fraction_min,
            "positive_fraction_max": settings.positive_fraction_max,
        }
        runtime = {
            "mammo_data_docs_dir": str(self.docs_dir),
            "mammo_validation_results_dir": str(self.results_dir),
        }
        try:
            self.context = gx.get_context(
                mode="file", project_root_dir=self.root, runtime_environment=runtime
            )
            self.checkpoint = self.context.checkpoints.get(CHECKPOINT)
            self.suite = self.context.suites.get(SUITE)
        except Exception as exc:  # GX raises many types; all mean "cannot validate"
            raise ConfigError(
                f"cannot load the GX context in {self.root} (checkpoint {CHECKPOINT!r}, "
                f"suite {SUITE!r}): {exc}"
            ) from exc

    @property
    def index_page(self) -> Path:
        return self.docs_dir / "index.html"

    def validate(self, frame: pd.DataFrame, run_name: str) -> ContractOutcome:
        """Run the checkpoint on one record profile; Data Docs are updated by its action."""
        from great_expectations.core.run_identifier import RunIdentifier

        run_time = datetime.now(UTC)
        result = self.checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=self.parameters,
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
        )
        self.localize_docs()
        results: list[Any] = []
        page: str | None = None
        for identifier, suite_result in result.run_results.items():
            results.extend(suite_result.results)
            page = page or self._page_of(identifier)
        return ContractOutcome(bool(result.success), results, page, run_time)

    def localize_docs(self) -> None:
        """Point the Data Docs pages built since the last pass at local copies of their
        CSS/JS (:func:`.docs_assets.localize_data_docs`). Like the page link, never fails a
        verdict."""
        try:
            docs_assets.localize_data_docs(self.docs_dir, assets_dir=self.docs_assets_dir)
        except OSError as exc:
            log.warning("%s: Data Docs keep their CDN links: %s", self.docs_dir, exc)

    def _page_of(self, identifier: Any) -> str | None:
        try:
            urls = self.context.get_docs_sites_urls(
                resource_identifier=identifier, site_name=DATA_DOCS_SITE
            )
        except Exception:  # the page is a convenience; never fail a verdict for it
            return None
        for entry in urls:
            url = entry.get("site_url")
            if url:
                parsed = urlparse(url)
                return unquote(parsed.path) if parsed.scheme == "file" else url
        return None
