"""Validate every file in the landing directory: claim, profile, check with GX, decide, move.

:func:`validate_landing` is the one entry point (CLI ``mammo validate`` and the Airflow DAG).
A run holds the lock of its landing directory and of its reports directory (a second run on
either gets a clear error, it does not wait), finishes what an interrupted run left staged
(:mod:`.claim`), then, per file in name order:

0. files modified within ``landing_quiet_seconds`` and still changing are left in landing
   (``deferred``); the others are **claimed** (renamed into the run's staging folder), so the
   bytes checked below are exactly the bytes moved, whatever an uploader does meanwhile;
1. sha256 of the bytes; a file whose sha256 is in the ledger was already decided and is
   reported as ``skipped`` and put back into landing (rerunning does nothing new);
2. the streaming profile (:mod:`.profile`) plus ``seen_before`` from the content-hash index
   and ``near_test_copy`` from the index of held-out test tiles (:mod:`.test_guard`);
   with a pool (``validation_workers``), steps 1-2 but ``seen_before`` run file-parallel in
   worker processes, which load the test index from the cache file this process names;
3. the committed checkpoint runs the suite on it (:mod:`.gx_context`); its Data Docs pages
   are rendered once for all files at the end of the run (also when the run stops early);
4. drift against the reference profile of the training data (:mod:`.drift`), blocking only
   when ``drift_blocks`` is set;
5. the decision is journaled, then: pass: atomic move into ``validated/``, then the hash index,
   reference profile and ledger are updated; fail: ``quarantine/<file>.reason.json`` is written
   and the file moved beside it. The journal entry is removed when all of that is done.

Anything unexpected while handling one file becomes that file's ``error`` verdict (the file is
put back into landing) and the others are still validated. Only problems that stop the whole
run (missing landing directory, no GX context, another run holding a lock) raise; staged files
not yet decided then go back into landing. Pool workers die with the run, even by ``kill -9``.

Longer than 400 lines because every crash-recovery step (claim, decision journal, move,
index, reference, ledger) must be read in the order it runs; the steps themselves live in
:mod:`.claim`, :mod:`.movement` and :mod:`.ledger`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.data.tfrecord_io import file_sha256
from mammo_pipeline.errors import DataError, MammoError
from mammo_pipeline.validation import drift as drift_mod
from mammo_pipeline.validation.claim import (
    JOURNAL_DIR,
    ClaimArea,
    Claimed,
    StaleRun,
    landing_candidates,
    new_run_id,
    release_file,
    remove_if_empty,
    settle,
)
from mammo_pipeline.validation.gx_context import (
    ContractChecker,
    data_docs_dir,
    expectations_root,
)
from mammo_pipeline.validation.ledger import HashIndex, Ledger
from mammo_pipeline.validation.movement import (
    REASON_SUFFIX,
    fault_point,
    free_name,
    move_file,
    partial_copies,
    run_lock,
    write_json_atomic,
)
from mammo_pipeline.validation.profile import FileProfile, add_test_copy_column, profile_file
from mammo_pipeline.validation.reference import IntensityProfile, load_reference, save_reference
from mammo_pipeline.validation.result import (
    FailedExpectation,
    FileResult,
    ValidationRunResult,
    Verdict,
)
from mammo_pipeline.validation.test_guard import guard_file, load_guard, load_guard_file
from mammo_pipeline.validation.verdict import explain

log = logging.getLogger(__name__)

LEDGER_FILE = "validation_ledger.jsonl"
HASH_INDEX_FILE = "validated_hashes.sqlite"
#: Left in landing for the next run (still being written, or changed while validated).
DEFERRED = cast(Verdict, "deferred")
_PR_SET_PDEATHSIG = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def landing_files(landing: Path) -> list[Path]:
    """The landing entries a run would validate (see :func:`.claim.landing_candidates`)."""
    return landing_candidates(landing)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MammoError):  # already says which file and what is wrong
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{type(exc).__name__}: {where}{exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


class _Run:
    def __init__(
        self,
        settings: Settings,
        landing: Path,
        validated: Path,
        quarantine: Path,
        progress: bool,
    ) -> None:
        self.settings = settings
        self.landing = landing
        self.validated = validated
        self.quarantine = quarantine
        self.progress = progress
        self.run_id = new_run_id()
        self.claims = ClaimArea(landing, self.run_id)
        self.staged: list[Claimed] = []
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
            # Data Docs pages: one build at the end of the run (build_docs)
            self._checker = ContractChecker(self.settings, defer_docs=True)
        return self._checker

    def build_docs(self) -> None:
        """The Data Docs pages of every file decided in this run, in one build."""
        if self._checker is not None:
            self._checker.build_docs()

    # --- claiming ----------------------------------------------------------------------
    def claim(self, paths: list[Path]) -> list[FileResult]:
        """Stage ``paths`` (see :mod:`.claim`); the error verdicts of those that cannot be."""
        errors = []
        for path in paths:
            try:
                claimed = self.claims.claim(path)
            except (DataError, OSError) as exc:
                errors.append(self.error(path, "could not be claimed, left in landing", exc))
                continue
            if claimed is not None:  # None: it vanished from landing meanwhile
                self.staged.append(claimed)
        return errors

    def put_back(self, claimed: Claimed) -> str:
        """Return a staged file to landing; says where it is now, in words."""
        where = self.claims.release(claimed)
        return (
            "left in landing"
            if where.name == claimed.name
            else f"left in landing as {where.name} (an upload took its name meanwhile)"
        )

    def release_leftovers(self) -> None:
        """Put back every staged file with no journaled decision (run stopped early); a file
        that cannot be put back stays staged, for the next run to recover."""
        for claimed in self.staged:
            if os.path.lexists(claimed.path) and not self.claims.journal_path(claimed).exists():
                try:
                    self.claims.release(claimed)
                except OSError:
                    log.exception("could not put %s back into landing", claimed.path)
        self.claims.tidy()

    # --- per file ----------------------------------------------------------------------
    def error(self, path: Path, what: str, exc: BaseException) -> FileResult:
        return FileResult(
            file=path.name,
            source=str(path),
            sha256=None,
            verdict="error",
            message=f"{what}: {_describe(exc)}",
        )

    def skipped(self, claimed: Claimed, sha: str) -> FileResult | None:
        """The 'already validated' result when the ledger knows these bytes (the file is put
        back into landing), else None."""
        previous = self.ledger.lookup(sha)
        if previous is None:
            return None
        where = previous.get("destination") or previous.get("file")
        left = self.put_back(claimed)
        return FileResult(
            file=claimed.name,
            source=str(claimed.source),
            sha256=sha,
            verdict="skipped",
            message=(
                f"already validated: same sha256 as {where} "
                f"({previous.get('verdict')} at {previous.get('validated_at')}); not moved, "
                f"{left}"
            ),
            destination=None,
            records=previous.get("records"),
            validated_at=previous.get("validated_at"),
        )

    def validate_file(self, claimed: Claimed) -> FileResult:
        """Hash, profile and decide one staged file in this process."""
        sha = file_sha256(claimed.path).sha256
        skipped = self.skipped(claimed, sha)
        if skipped is not None:
            return skipped
        return self.decide(
            claimed, sha, profile_file(claimed.path, sha256=sha, progress=self.progress)
        )

    def decide(self, claimed: Claimed, sha: str, profile: FileProfile) -> FileResult:
        """Check a staged file's profile against the suite, then move the file and record
        the decision."""
        skipped = self.skipped(claimed, sha)  # identical bytes decided earlier in this run
        if skipped is not None:
            return skipped
        frame = profile.records
        seen = self.index.seen(frame["content_hash"].dropna())
        frame["seen_before"] = frame["content_hash"].isin(seen) if seen else False
        if "near_test_copy" not in frame:  # copies of held-out test tiles (pool: done there)
            add_test_copy_column(frame, load_guard(self.settings), profile.rings)
        outcome = self.checker.validate(frame, run_name=f"{claimed.name}@{sha[:12]}")
        failures = explain(outcome.results, frame)
        intensity = IntensityProfile.from_frame(frame, self.bins, name=claimed.name)
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
        fault_point("checked")
        if not claimed.unchanged():
            left = self.put_back(claimed)
            return FileResult(
                file=claimed.name,
                source=str(claimed.source),
                sha256=None,
                verdict=DEFERRED,
                message="changed while it was being validated (an upload still writing to "
                f"it?); not decided, {left} for the next run",
            )
        validated_at = _now()
        facts = profile.facts.to_dict()
        facts["path"] = str(claimed.source)
        positive = intensity.positive_fraction
        common: dict[str, Any] = {
            "file": claimed.name,
            "source": str(claimed.source),
            "sha256": sha,
            "records": profile.facts.record_count,
            "positive_fraction": None if positive is None else round(positive, 6),
            "failed_expectations": failures,
            "drift": drift,
            "data_docs": outcome.data_docs_page,
            "facts": facts,
            "validated_at": validated_at,
        }
        decision: dict[str, Any] = {"run_id": self.run_id, "name": claimed.name}
        if not failures:
            target = free_name(self.validated, claimed.name)
            intensity.files = [target.name]
            result = FileResult(
                verdict="passed",
                message="passed all expectations"
                + (f"; drift reported: {drift['summary']}" if drift["drifted"] else ""),
                destination=str(target),
                **common,
            )
            decision["content_hashes"] = [str(h) for h in frame["content_hash"].dropna()]
            decision["intensity"] = intensity.to_dict()
        else:
            target = free_name(self.quarantine, claimed.name, companions=(REASON_SUFFIX,))
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
            decision["reason"] = _reason(result)
        decision.update(
            sha256=sha,
            verdict=result.verdict,
            target=str(target),
            reason_file=result.reason_file,
            result=result.to_dict(),
            ledger={
                "sha256": sha,
                "file": claimed.name,
                "verdict": result.verdict,
                "destination": result.destination,
                "reason_file": result.reason_file,
                "records": result.records,
                "validated_at": validated_at,
                "run_id": self.run_id,
            },
        )
        self.commit(claimed, decision)
        return result

    def commit(self, claimed: Claimed, decision: dict[str, Any]) -> None:
        """Journal the decision, move the staged file, record it, clear the journal."""
        target = Path(decision["target"])
        reason = decision.get("reason_file")
        self.claims.journal(claimed, decision)
        fault_point("journaled")
        step = "the reason file"
        try:
            if reason:
                write_json_atomic(Path(reason), decision["reason"])
            step = "the file"
            move_file(claimed.path, target)
        except BaseException as exc:
            if not os.path.lexists(target):  # nothing moved: undo our own side files
                if reason:
                    try:
                        Path(reason).unlink(missing_ok=True)
                    except OSError:  # e.g. quarantine is not a directory: nothing written
                        pass
                self.claims.forget(claimed)
            if isinstance(exc, OSError):
                problem = exc.strerror or str(exc)
                if os.path.lexists(target.parent) and not target.parent.is_dir():
                    problem = "it is not a directory"
                raise DataError(target.parent, f"cannot write {step} there: {problem}") from exc
            raise
        fault_point("moved")
        self.record(decision)
        self.claims.forget(claimed)

    def record(self, decision: dict[str, Any]) -> None:
        """The bookkeeping of a moved file: hash index, reference profile, ledger. Each step
        can be repeated (recovery after a crash in the middle of it)."""
        target = Path(decision["target"])
        if decision["verdict"] == "passed":
            self.index.add(decision["content_hashes"], target.name)
            fault_point("indexed")
            data = dict(decision["intensity"])
            data.pop("positive_fraction", None)
            intensity = IntensityProfile(**data)
            if target.name not in self.reference.files:
                self.reference.add(intensity)
                save_reference(self.settings.reports, self.reference)
            self.passed_profiles.append(intensity)
        if self.ledger.lookup(decision["sha256"]) is None:
            self.ledger.append(decision["ledger"])
        fault_point("recorded")

    def guarded(self, claimed: Claimed, fn: Any, *args: Any) -> FileResult:
        """``fn(*args)``, or an ``error`` verdict for ``claimed``: one file's surprise (an
        unreadable file, a full disk, a dead worker) never stops the others."""
        try:
            return fn(*args)
        except Exception as exc:
            log.exception("validation of %s failed", claimed.source)
            if self.claims.journal_path(claimed).exists():
                where = (
                    f"moved to {self.journal_target(claimed)} but not recorded; the next run "
                    "records it"
                )
            elif os.path.lexists(claimed.path):
                try:
                    where = self.put_back(claimed)
                except OSError as put_back_error:
                    where = (
                        f"still staged in {claimed.path.parent} ({_describe(put_back_error)}); "
                        "the next run puts it back into landing"
                    )
            else:
                where = "left in landing"
            return self.error(claimed.source, f"could not be validated, {where}", exc)

    def journal_target(self, claimed: Claimed) -> str:
        try:
            return str(read_json(self.claims.journal_path(claimed))["target"])
        except (OSError, ValueError, KeyError, TypeError):
            return "its destination"

    # --- recovery of interrupted runs --------------------------------------------------
    def recover(self) -> list[FileResult]:
        """Finish what interrupted runs journaled as moved; put every other file they left
        staged back into landing (it is validated again by this run)."""
        results: list[FileResult] = []
        for stale in self.claims.stale_runs():
            for journal, decision in stale.decisions():
                try:
                    results.extend(self._recover_decision(stale, journal, decision))
                except (KeyError, TypeError, ValueError):  # a journal entry not made by us
                    results.extend(self._recover_decision(stale, journal, None))
            for path in stale.staged():
                try:
                    where = release_file(path, self.landing, path.name)
                except OSError:  # stays staged; the next run tries again
                    log.exception("could not put %s back into landing", path)
                    continue
                log.warning("put %s back into landing as %s (interrupted run)", path, where.name)
            for d in (stale.directory / JOURNAL_DIR, stale.directory):
                remove_if_empty(d)
        remove_if_empty(self.claims.root)
        return results

    def _recover_decision(
        self, stale: StaleRun, journal: Path, decision: dict[str, Any] | None
    ) -> list[FileResult]:
        if decision is None:
            log.error("unreadable journal entry %s left as it is", journal)
            return [
                FileResult(
                    file=journal.name.removesuffix(".json"),
                    source=str(journal),
                    sha256=None,
                    verdict="error",
                    message=f"unreadable journal entry of the interrupted run {stale.run_id} "
                    f"({journal}); left for a person to inspect",
                )
            ]
        staged = stale.directory / decision["name"]
        target = Path(decision["target"])
        sha = decision["sha256"]
        pid = stale.run_id.split("-")[1] if stale.run_id.count("-") >= 2 else None
        for partial in partial_copies(target):
            if pid and partial.name.endswith(f"-{pid}"):
                partial.unlink(missing_ok=True)  # a copy across filesystems cut short
        moved = os.path.lexists(target) and file_sha256(target).sha256 == sha
        if os.path.lexists(staged):
            if not moved:
                reason = decision.get("reason_file")
                if reason and not os.path.lexists(target):
                    _unlink_reason(Path(reason), sha)
                journal.unlink()
                return []  # the staged file goes back to landing and is validated again
            if file_sha256(staged).sha256 == sha:
                staged.unlink()  # the copy across filesystems finished; keep one
        if not moved:
            return [
                FileResult(
                    file=decision["name"],
                    source=decision["result"]["source"],
                    sha256=sha,
                    verdict="error",
                    message=f"the interrupted run {stale.run_id} was moving it to {target}, "
                    "which does not hold those bytes; journal kept in "
                    f"{journal} for a person to inspect",
                )
            ]
        self.record(decision)
        journal.unlink()
        result = _result_from_dict(decision["result"])
        result.message = (
            f"decided by the interrupted run {stale.run_id}, recorded now: {result.message}"
        )
        return [result]


def read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _unlink_reason(path: Path, sha: str) -> None:
    """Remove a reason file written for a move that did not happen (ours: same sha256)."""
    try:
        if read_json(path).get("sha256") == sha:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _result_from_dict(data: dict[str, Any]) -> FileResult:
    data = dict(data)
    data["failed_expectations"] = [
        FailedExpectation(**f) for f in data.get("failed_expectations") or []
    ]
    return FileResult(**data)


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


def _workers(settings: Settings, files: int) -> int:
    if settings.validation_workers:
        return min(settings.validation_workers, max(files, 1))
    return max(1, min(files, os.cpu_count() or 1, 8))


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the worker dies with the validating process, even when that one is
    killed by SIGKILL (Linux parent-death signal; a watchdog thread elsewhere or as a backup).
    Its BLAS runs on one thread: the workers already keep every core busy, and their small
    matrix products only lose time to a thread pool per process."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its default
        pass
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


#: Serialises the ``__main__`` swap of :func:`_workers_skip_main` between threads.
_MAIN_SWAP = threading.Lock()


@contextlib.contextmanager
def _workers_skip_main() -> Iterator[None]:
    """While pool workers start, they are not told to re-run the parent's ``__main__``.

    ``spawn`` makes each worker re-import the parent's main module: by name when it has a
    ``__spec__``, else by running its ``__file__``. In an Airflow task that file is the
    ``airflow`` entry point, and importing Airflow there fails (the task process carries an
    ORM URL Airflow blocks on purpose: "Could not parse SQLAlchemy URL"), so the pool broke and
    every file was validated in-process. The workers only run this module's functions (pickled
    by reference), so they need nothing from ``__main__``: while they start, ``__main__`` is a
    bare module with neither, and ``spawn`` leaves the worker's own ``__main__`` alone. Workers
    start only inside ``submit`` (spawn starts them on demand; no ``max_tasks_per_child``, so
    none is replaced later), which is what this wraps.
    """
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def _sha256(path: Path) -> str:
    """Worker side: the file's sha256 (for the ledger, before anything else)."""
    return file_sha256(path).sha256


def _prepare(path: Path, sha: str, guard: str | None) -> FileProfile:
    """Worker side: the file's profile with ``near_test_copy`` from the held-out index
    ``guard`` (see :func:`.test_guard.guard_file`; None: left to :meth:`_Run.decide`, which
    then uses the ring spectra kept for it). Searching the index here runs it on every core."""
    profile = profile_file(path, sha256=sha)
    if guard is not None:
        add_test_copy_column(profile.records, load_guard_file(guard), profile.rings)
        profile.rings = None  # 2.3 kB a record the decision no longer needs
    return profile


def _validate_in_pool(run: _Run, files: list[Claimed], workers: int) -> list[FileResult]:
    """Hash and profile files in worker processes; decide in this process, in name order
    (so duplicate detection and name collisions do not depend on timing).

    The workers hash the files (sha256) while this process loads the held-out test index
    (hashing the test split's files for its cache key); then each file the ledger does not
    know is profiled and searched against that index in a worker, while this process loads
    GX and decides, file by file, as the profiles come back."""
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from tqdm.auto import tqdm

    known = run.ledger.known()
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        with _workers_skip_main():
            shas = [pool.submit(_sha256, claimed.path) for claimed in files]
        pids = [p.pid for p in multiprocessing.active_children()]
        log.info(
            "validation pool: %d worker processes (pids %s) profile %d files for process %d",
            len(pids),
            ",".join(map(str, pids)),
            len(files),
            os.getpid(),
        )
        try:
            guard: str | None = guard_file(run.settings)  # the test split is hashed once
        except Exception:  # noqa: BLE001 - each file's decision reports it (fails closed)
            log.warning("held-out test index unavailable; each file's decision reports why")
            guard = None
        profiles: list[Future | None] = []
        for claimed, sha_future in zip(files, shas, strict=True):
            try:
                sha = sha_future.result()
            except Exception:  # noqa: BLE001 - its decision below reports it
                profiles.append(None)
                continue
            if sha in known:
                profiles.append(None)
                continue
            with _workers_skip_main():  # in case the pool replaces a worker meanwhile
                profiles.append(pool.submit(_prepare, claimed.path, sha, guard))
        run.checker  # noqa: B018 - load GX here, overlapping with the workers' profiling
        for claimed, sha_future, future in tqdm(
            list(zip(files, shas, profiles, strict=True)),
            desc="files",
            unit="file",
            disable=not run.progress,
        ):

            def decide(
                sha_future: Future = sha_future, future: Any = future, claimed: Claimed = claimed
            ) -> FileResult:
                try:
                    sha = sha_future.result()
                    profile = None if future is None else future.result()
                except BrokenProcessPool:
                    # A worker died or could not start (out of memory, a broken
                    # interpreter): profile here instead.
                    log.warning("worker pool unavailable; validating %s in-process", claimed.name)
                    return run.validate_file(claimed)
                if profile is None:
                    skipped = run.skipped(claimed, sha)
                    assert skipped is not None
                    return skipped
                return run.decide(claimed, sha, profile)

            results.append(run.guarded(claimed, decide))
    return results


def _prepare_dirs(validated: Path, quarantine: Path, reports: Path) -> None:
    """Create the output directories. An unusable validated/ or quarantine/ is not fatal:
    each file bound for it gets an error verdict and stays in landing."""
    for d in (validated, quarantine):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("%s is not usable (%s); files bound for it stay in landing", d, exc)
    try:
        reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(reports, f"cannot create the reports directory: {exc.strerror}") from exc


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
    Raises :class:`~mammo_pipeline.errors.MammoError` only when validation cannot run,
    including when another run holds the landing or reports directory.
    """
    settings = settings or get_settings()
    landing_dir = Path(landing) if landing is not None else settings.landing
    validated_dir = Path(validated) if validated is not None else settings.validated
    quarantine_dir = Path(quarantine) if quarantine is not None else settings.quarantine
    if not landing_dir.is_dir():
        raise DataError(landing_dir, "landing directory does not exist")
    expectations_root(settings)  # a missing GX context stops the run before anything else
    _prepare_dirs(validated_dir, quarantine_dir, settings.reports)
    started = _now()
    with run_lock(landing_dir), run_lock(settings.reports):
        run = _Run(settings, landing_dir, validated_dir, quarantine_dir, progress)
        results: list[FileResult] = []
        try:
            recovered = run.recover()
            ready, deferred = settle(
                landing_candidates(landing_dir), settings.landing_quiet_seconds
            )
            if ready and _workers(settings, len(ready)) <= 1:
                run.checker  # noqa: B018 - a broken GX context stops the run, before any claim
            results.extend(run.claim(ready))
            results.extend(
                FileResult(
                    file=d.path.name,
                    source=str(d.path),
                    sha256=None,
                    verdict=DEFERRED,
                    message=d.reason,
                )
                for d in deferred
            )
            fault_point("claimed")
            workers = _workers(settings, len(run.staged))
            if workers <= 1:
                from tqdm.auto import tqdm

                for claimed in tqdm(run.staged, desc="files", unit="file", disable=not progress):
                    results.append(run.guarded(claimed, run.validate_file, claimed))
            else:
                results.extend(_validate_in_pool(run, run.staged, workers))
            results = recovered + sorted(results, key=lambda f: f.file)
            batch = drift_mod.batch_profile(run.passed_profiles, run.bins)
            run_drift = drift_mod.compare(run.reference_at_start, batch, settings)
        finally:
            run.build_docs()
            run.index.close()
            run.release_leftovers()
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
