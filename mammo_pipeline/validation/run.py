"""Validate every file in the landing directory: profile, check with GX, decide, move.

:func:`validate_landing` is the one entry point (CLI ``mammo validate`` and the Airflow DAG).
Per file, in order:

1. sha256 of the bytes; a file whose sha256 is in the ledger was already decided and is
   reported as ``skipped`` and left where it is (rerunning does nothing new);
2. the streaming profile (:mod:`.profile`) plus ``seen_before`` from the content-hash index;
3. the committed checkpoint runs the suite on it and updates Data Docs (:mod:`.gx_context`);
4. drift against the reference profile of the training data (:mod:`.drift`), blocking only
   when ``drift_blocks`` is set;
5. pass: atomic move into ``validated/``, then the hash index, reference profile and ledger are
   updated; fail: ``quarantine/<file>.reason.json`` is written and the file moved beside it.

Anything unexpected while handling one file becomes that file's ``error`` verdict (the file
stays in landing) and the others are still validated. Only problems that stop the whole run
(missing landing directory, no GX context, another run holding the lock) raise.
"""

from __future__ import annotations

import copy
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.data.tfrecord_io import file_sha256
from mammo_pipeline.errors import DataError
from mammo_pipeline.validation import drift as drift_mod
from mammo_pipeline.validation.gx_context import (
    ContractChecker,
    data_docs_dir,
    expectations_root,
)
from mammo_pipeline.validation.ledger import HashIndex, Ledger
from mammo_pipeline.validation.movement import (
    REASON_SUFFIX,
    free_name,
    move_file,
    run_lock,
    write_json_atomic,
)
from mammo_pipeline.validation.profile import FileProfile, profile_file
from mammo_pipeline.validation.reference import IntensityProfile, load_reference, save_reference
from mammo_pipeline.validation.result import FailedExpectation, FileResult, ValidationRunResult
from mammo_pipeline.validation.verdict import explain

log = logging.getLogger(__name__)

LEDGER_FILE = "validation_ledger.jsonl"
HASH_INDEX_FILE = "validated_hashes.sqlite"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def landing_files(landing: Path) -> list[Path]:
    """Every regular, non-hidden file directly in ``landing`` (writers should upload under a
    hidden temporary name and rename, so half-written files are never picked up)."""
    return sorted(p for p in landing.iterdir() if p.is_file() and not p.name.startswith("."))


class _Run:
    def __init__(
        self, settings: Settings, validated: Path, quarantine: Path, progress: bool
    ) -> None:
        self.settings = settings
        self.validated = validated
        self.quarantine = quarantine
        self.progress = progress
        reports = settings.reports
        self.ledger = Ledger(reports / LEDGER_FILE)
        self.index = HashIndex(reports / HASH_INDEX_FILE)
        self._checker: ContractChecker | None = None
        # Drift is measured against the reference as it was when the run started; passing
        # files are added to a separate copy that is saved after each move.
        self.reference_at_start = load_reference(reports)
        self.reference = copy.deepcopy(self.reference_at_start) or IntensityProfile.empty(
            settings.drift_bins
        )
        self.bins = self.reference.bins
        self.passed_profiles: list[IntensityProfile] = []

    @property
    def checker(self) -> ContractChecker:
        """The GX context, loaded on first use (in pool mode: while the workers profile)."""
        if self._checker is None:
            self._checker = ContractChecker(self.settings)
        return self._checker

    def skipped(self, path: Path, sha: str) -> FileResult | None:
        """The 'already validated' result when the ledger knows these bytes, else None."""
        previous = self.ledger.lookup(sha)
        if previous is None:
            return None
        where = previous.get("destination") or previous.get("file")
        return FileResult(
            file=path.name,
            source=str(path),
            sha256=sha,
            verdict="skipped",
            message=(
                f"already validated: same sha256 as {where} "
                f"({previous.get('verdict')} at {previous.get('validated_at')}); not moved"
            ),
            destination=None,
            records=previous.get("records"),
            validated_at=previous.get("validated_at"),
        )

    def validate_file(self, path: Path) -> FileResult:
        """Hash, profile and decide one file in this process."""
        sha = file_sha256(path).sha256
        skipped = self.skipped(path, sha)
        if skipped is not None:
            return skipped
        return self.decide(path, sha, profile_file(path, sha256=sha, progress=self.progress))

    def decide(self, path: Path, sha: str, profile: FileProfile) -> FileResult:
        """Check a profile against the suite, then move the file and record the decision."""
        skipped = self.skipped(path, sha)  # identical bytes decided earlier in this run
        if skipped is not None:
            return skipped
        frame = profile.records
        seen = self.index.seen(frame["content_hash"].dropna())
        frame["seen_before"] = frame["content_hash"].isin(seen) if seen else False
        outcome = self.checker.validate(frame, run_name=f"{path.name}@{sha[:12]}")
        failures = explain(outcome.results, frame)
        intensity = IntensityProfile.from_frame(frame, self.bins, name=path.name)
        drift = drift_mod.compare(self.reference_at_start, intensity, self.settings)
        if drift["blocks"]:
            failures.append(
                FailedExpectation(
                    expectation="drift",
                    column="pixel_mean, label",
                    description="the batch does not drift from the training data "
                    "(blocking because drift_blocks is set)",
                    message=f"drift against the reference profile: {drift['summary']}",
                    observed={
                        "psi": drift["psi"],
                        "positive_fraction_change": drift["positive_fraction_change"],
                    },
                    expected={
                        "psi_max": drift["psi_threshold"],
                        "positive_fraction_change_max": drift["class_balance_threshold"],
                    },
                )
            )
        validated_at = _now()
        facts = profile.facts.to_dict()
        positive = intensity.positive_fraction
        common: dict[str, Any] = {
            "file": path.name,
            "source": str(path),
            "sha256": sha,
            "records": profile.facts.record_count,
            "positive_fraction": None if positive is None else round(positive, 6),
            "failed_expectations": failures,
            "drift": drift,
            "data_docs": outcome.data_docs_page,
            "facts": facts,
            "validated_at": validated_at,
        }
        if not failures:
            target = free_name(self.validated, path.name)
            move_file(path, target)
            # Bookkeeping only after the move succeeded.
            self.index.add(frame["content_hash"].dropna(), target.name)
            self.reference.add(intensity)
            save_reference(self.settings.reports, self.reference)
            self.passed_profiles.append(intensity)
            result = FileResult(
                verdict="passed",
                message="passed all expectations"
                + (f"; drift reported: {drift['summary']}" if drift["drifted"] else ""),
                destination=str(target),
                **common,
            )
        else:
            target = free_name(self.quarantine, path.name, companions=(REASON_SUFFIX,))
            reason_path = target.with_name(target.name + REASON_SUFFIX)
            first = failures[0].message
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            result = FileResult(
                verdict="quarantined",
                message=first + more,
                destination=str(target),
                reason_file=str(reason_path),
                **common,
            )
            write_json_atomic(reason_path, _reason(result))
            try:
                move_file(path, target)
            except OSError:
                reason_path.unlink(missing_ok=True)  # our own side file; the data stays put
                raise
        self.ledger.append(
            {
                "sha256": sha,
                "file": path.name,
                "verdict": result.verdict,
                "destination": result.destination,
                "reason_file": result.reason_file,
                "records": result.records,
                "validated_at": validated_at,
            }
        )
        return result


def _reason(result: FileResult) -> dict[str, Any]:
    """The content of ``quarantine/<file>.reason.json``."""
    return {
        "file": result.file,
        "sha256": result.sha256,
        "verdict": result.verdict,
        "validated_at": result.validated_at,
        "source": result.source,
        "destination": result.destination,
        "summary": result.message,
        "failed_expectations": [f.to_dict() for f in result.failed_expectations],
        "drift": result.drift,
        "facts": result.facts,
        "data_docs": result.data_docs,
    }


def _guarded(path: Path, fn: Any, *args: Any) -> FileResult:
    """``fn(*args)``, or an ``error`` verdict for ``path``: one file's surprise (an unreadable
    file, a full disk, a dead worker) never stops the others; the file stays in landing."""
    try:
        return fn(*args)
    except Exception as exc:
        log.exception("validation of %s failed", path)
        return FileResult(
            file=path.name,
            source=str(path),
            sha256=None,
            verdict="error",
            message=f"could not be validated, left in landing: {type(exc).__name__}: {exc}",
        )


def _workers(settings: Settings, files: int) -> int:
    if settings.validation_workers:
        return min(settings.validation_workers, max(files, 1))
    return max(1, min(files, os.cpu_count() or 1, 8))


def _prepare(path: Path, known: frozenset[str]) -> tuple[str, FileProfile | None]:
    """Worker side: the file's sha256 and, unless the ledger already knows it, its profile."""
    sha = file_sha256(path).sha256
    return sha, (None if sha in known else profile_file(path, sha256=sha))


def _validate_in_pool(run: _Run, files: list[Path], workers: int) -> list[FileResult]:
    """Hash and profile files in worker processes; decide in this process, in name order
    (so duplicate detection and name collisions do not depend on timing)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from tqdm.auto import tqdm

    known = run.ledger.known()
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_prepare, path, known) for path in files]
        run.checker  # noqa: B018 - load GX here, overlapping with the workers' profiling
        for path, future in tqdm(
            list(zip(files, futures, strict=True)),
            desc="files",
            unit="file",
            disable=not run.progress,
        ):

            def decide(future: Any = future, path: Path = path) -> FileResult:
                try:
                    sha, profile = future.result()
                except BrokenProcessPool:
                    # Worker processes cannot start everywhere (e.g. inside an Airflow task
                    # whose __main__ cannot be re-imported by "spawn"): profile here instead.
                    log.warning("worker pool unavailable; validating %s in-process", path.name)
                    return run.validate_file(path)
                if profile is None:
                    skipped = run.skipped(path, sha)
                    assert skipped is not None
                    return skipped
                return run.decide(path, sha, profile)

            results.append(_guarded(path, decide))
    return results


def validate_landing(
    settings: Settings | None = None,
    landing: Path | str | None = None,
    validated: Path | str | None = None,
    quarantine: Path | str | None = None,
    *,
    report: Path | str | None = None,
    progress: bool = False,
) -> ValidationRunResult:
    """Validate every file in ``landing`` (default: the configured directories).

    Returns the run's :class:`ValidationRunResult`; writes it as JSON to ``report`` if given.
    Raises :class:`~mammo_pipeline.errors.MammoError` only when validation cannot run.
    """
    settings = settings or get_settings()
    landing_dir = Path(landing) if landing is not None else settings.landing
    validated_dir = Path(validated) if validated is not None else settings.validated
    quarantine_dir = Path(quarantine) if quarantine is not None else settings.quarantine
    if not landing_dir.is_dir():
        raise DataError(landing_dir, "landing directory does not exist")
    expectations_root(settings)  # a missing GX context stops the run before anything else
    for d in (validated_dir, quarantine_dir, settings.reports):
        d.mkdir(parents=True, exist_ok=True)
    started = _now()
    with run_lock(settings.reports):
        run = _Run(settings, validated_dir, quarantine_dir, progress)
        results: list[FileResult] = []
        try:
            files = landing_files(landing_dir)
            workers = _workers(settings, len(files))
            if workers <= 1:
                if files:
                    run.checker  # noqa: B018 - a broken GX context stops the run, before any move
                for path in files:
                    results.append(_guarded(path, run.validate_file, path))
            else:
                results.extend(_validate_in_pool(run, files, workers))
            batch = drift_mod.batch_profile(run.passed_profiles, run.bins)
            run_drift = drift_mod.compare(run.reference_at_start, batch, settings)
        finally:
            run.index.close()
        docs = data_docs_dir(settings) / "index.html"
        result = ValidationRunResult(
            started_at=started,
            finished_at=_now(),
            landing=str(landing_dir),
            validated=str(validated_dir),
            quarantine=str(quarantine_dir),
            files=results,
            data_docs_path=str(docs) if docs.exists() else None,
            drift=run_drift,
            report_path=str(report) if report is not None else None,
        )
    if report is not None:
        write_json_atomic(Path(report), result.to_dict())
    return result
