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
#: GX logs its bookkeeping at INFO: one "Skipping registering function ..." line per decorated
#: function on import (~200 in an Airflow task log, where INFO is shown), then "Multiple
#: declarations of metric ...", "FileDataContext loading fluent config", "Loading
#: 'datasources'" on every run. All of GX goes to WARNING; its warnings and errors still come
#: through, and the run prints its own summary.
GX_CHATTY_LOGGERS = ("great_expectations",)


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
    (default: ``docs-assets/node_modules``, filled by ``make install``). With ``defer_docs``
    the pages of :meth:`validate` are rendered by :meth:`build_docs`, all in one build.
    """

    def __init__(
        self,
        settings: Settings,
        docs_assets_dir: Path = docs_assets.DEFAULT_ASSETS_DIR,
        *,
        defer_docs: bool = False,
    ) -> None:
        self.defer_docs = defer_docs
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        quiet_gx_logging()
        import great_expectations as gx

        from mammo_pipeline.validation import gx_metrics

        gx_metrics.register()
        self.root = expectations_root(settings)
        self.docs_dir = data_docs_dir(settings)
        self.docs_assets_dir = docs_assets_dir
        self.results_dir = validation_results_dir(settings)
        self._pending_docs: list[Any] = []  # validations whose pages wait for build_docs
        self._pending_sites: set[str] = set()
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
        """Run the checkpoint on one record profile; Data Docs are updated by its action.

        With ``defer_docs``, when the checkpoint's only actions update Data Docs, its
        validation definitions are run as the checkpoint runs them (same suite, parameters,
        result format, run id and stored result) and the pages wait for :meth:`build_docs`,
        which renders every validation run so in one build: rendering costs about as much as
        validating (GX compiles its page templates again for every build), so a run of
        several files builds once. The outcome's page link is the page's path either way."""
        from great_expectations.core.run_identifier import RunIdentifier

        run_time = datetime.now(UTC)
        run_id = RunIdentifier(run_name=run_name, run_time=run_time)
        sites = self._docs_only_sites() if self.defer_docs else None
        if sites is None:
            result = self.checkpoint.run(
                batch_parameters={"dataframe": frame},
                expectation_parameters=self.parameters,
                run_id=run_id,
            )
            run_results, success = result.run_results, bool(result.success)
            self.localize_docs()
        else:
            run_results = self._run_validations(frame, run_id)
            success = all(r.success for r in run_results.values())
            self._pending_docs.extend(run_results)
            self._pending_sites.update(sites)
        results: list[Any] = []
        page: str | None = None
        for identifier, suite_result in run_results.items():
            results.extend(suite_result.results)
            page = page or self._page_of(identifier, only_if_exists=sites is None)
        return ContractOutcome(success, results, page, run_time)

    def _docs_only_sites(self) -> list[str] | None:
        """The Data Docs sites the checkpoint's actions update, when updating Data Docs is
        all they do; else None (the checkpoint then runs whole, actions included)."""
        from great_expectations.checkpoint import UpdateDataDocsAction

        actions = list(self.checkpoint.actions)
        if not all(isinstance(a, UpdateDataDocsAction) and a.site_names for a in actions):
            return None  # another action, or one that updates every site
        return [site for a in actions for site in a.site_names]

    def _run_validations(self, frame: pd.DataFrame, run_id: Any) -> dict[Any, Any]:
        """The checkpoint's validation definitions on ``frame``, keyed and stamped as
        ``Checkpoint.run`` keys and stamps them (the results are stored by GX)."""
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        out: dict[Any, Any] = {}
        for definition in self.checkpoint.validation_definitions:
            result = definition.run(
                checkpoint_id=self.checkpoint.id,
                batch_parameters={"dataframe": frame},
                expectation_parameters=self.parameters,
                result_format=self.checkpoint.result_format,
                run_id=run_id,
            )
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=definition.suite.name),
                run_id=run_id,
                batch_identifier=result.batch_id,
            )
            out[key] = result
        return out

    def build_docs(self) -> None:
        """Render the Data Docs pages of the validations :meth:`validate` deferred since the
        last call, and the index, in one build (then localise them). Like the page link,
        never fails a verdict: a page that could not be built is logged; GX keeps every
        validation result, so a later build renders it."""
        if not self._pending_docs:
            return
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        identifiers = [*self._pending_docs, ExpectationSuiteIdentifier(name=SUITE)]
        sites = sorted(self._pending_sites) or None
        self._pending_docs, self._pending_sites = [], set()
        try:
            self.context.build_data_docs(site_names=sites, resource_identifiers=identifiers)
        except Exception:  # the pages are a convenience; the verdicts are already made
            log.exception(
                "could not build the Data Docs pages of %d validations", len(identifiers) - 1
            )
        self.localize_docs()

    def localize_docs(self) -> None:
        """Point the Data Docs pages built since the last pass at local copies of their
        CSS/JS (:func:`.docs_assets.localize_data_docs`). Like the page link, never fails a
        verdict."""
        try:
            docs_assets.localize_data_docs(self.docs_dir, assets_dir=self.docs_assets_dir)
        except OSError as exc:
            log.warning("%s: Data Docs keep their CDN links: %s", self.docs_dir, exc)

    def _page_of(self, identifier: Any, *, only_if_exists: bool = True) -> str | None:
        try:
            urls = self.context.get_docs_sites_urls(
                resource_identifier=identifier,
                site_name=DATA_DOCS_SITE,
                only_if_exists=only_if_exists,
            )
        except Exception:  # the page is a convenience; never fail a verdict for it
            return None
        for entry in urls:
            url = entry.get("site_url")
            if url:
                parsed = urlparse(url)
                return unquote(parsed.path) if parsed.scheme == "file" else url
        return None
