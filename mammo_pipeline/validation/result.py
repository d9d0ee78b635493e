"""The typed result of a validation run: per-file verdicts with reasons, counts, drift and
the Data Docs location. Everything converts to plain JSON (``to_dict``) so that the CLI
report, an Airflow XCom and an MLflow run can record it unchanged."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["passed", "quarantined", "skipped", "deferred", "error"]


@dataclass(slots=True)
class FailedExpectation:
    """One broken rule of a file, in words and numbers."""

    expectation: str  # the GX expectation type, or "drift"
    column: str | None
    description: str  # the rule in words (from the suite)
    message: str  # what was found, in words, with the numbers
    observed: Any = None
    expected: dict[str, Any] = field(default_factory=dict)
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FileResult:
    """The verdict on one landing file."""

    file: str
    source: str
    sha256: str | None
    verdict: Verdict
    message: str
    destination: str | None = None
    reason_file: str | None = None
    records: int | None = None
    positive_fraction: float | None = None
    failed_expectations: list[FailedExpectation] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    data_docs: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    validated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed_expectations"] = [f.to_dict() for f in self.failed_expectations]
        return d


@dataclass(slots=True)
class ValidationRunResult:
    """Everything a validation run decided; returned to the CLI, the DAG and MLflow."""

    started_at: str
    finished_at: str
    landing: str
    validated: str
    quarantine: str
    files: list[FileResult]
    data_docs_path: str | None
    drift: dict[str, Any]
    report_path: str | None = None

    @property
    def passed(self) -> int:
        return self._count("passed")

    @property
    def quarantined(self) -> int:
        return self._count("quarantined")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def deferred(self) -> int:
        """Files left in landing for the next run (still being written, or changed meanwhile)."""
        return self._count("deferred")

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def new_validated_files(self) -> list[str]:
        return [f.destination for f in self.files if f.verdict == "passed" and f.destination]

    def _count(self, verdict: str) -> int:
        return sum(1 for f in self.files if f.verdict == verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "landing": self.landing,
            "validated": self.validated,
            "quarantine": self.quarantine,
            "counts": {
                "files": len(self.files),
                "passed": self.passed,
                "quarantined": self.quarantined,
                "skipped": self.skipped,
                "deferred": self.deferred,
                "errors": self.errors,
            },
            "passed": self.passed,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "new_validated_files": self.new_validated_files,
            "data_docs_path": self.data_docs_path,
            "report_path": self.report_path,
            "drift": self.drift,
            "files": [f.to_dict() for f in self.files],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def summary_lines(self) -> list[str]:
        """A fixed-width table, one line per file, then totals, drift and Data Docs."""
        header = f"{'FILE':<40} {'VERDICT':<12} {'RECORDS':>8} {'POS%':>6} {'PSI':>6}  REASON"
        lines = [header, "-" * len(header)]
        for f in self.files:
            pos = "-" if f.positive_fraction is None else f"{100 * f.positive_fraction:.1f}"
            psi = (f.drift or {}).get("psi")
            psi_text = "-" if psi is None else f"{psi:.3f}"
            records = "-" if f.records is None else str(f.records)
            reason = f.message
            lines.append(
                f"{_clip(f.file, 40):<40} {f.verdict:<12} {records:>8} {pos:>6} {psi_text:>6}  "
                f"{reason}"
            )
        lines.append(
            f"{len(self.files)} file(s): {self.passed} passed, {self.quarantined} quarantined, "
            f"{self.skipped} skipped (already validated), {self.deferred} deferred to the next "
            f"run, {self.errors} error(s)"
        )
        if self.drift:
            lines.append(f"drift: {self.drift.get('summary', '-')}")
        if self.data_docs_path:
            lines.append(f"Data Docs: {self.data_docs_path}")
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
