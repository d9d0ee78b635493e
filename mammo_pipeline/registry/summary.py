"""The gate's verdict in words, written once: what the DAG's gate task logs (and shows the
reviewer in the approval form) and what ``mammo registry gate`` prints."""

from __future__ import annotations

from mammo_pipeline.config import Settings
from mammo_pipeline.registry.decision import GateDecision
from mammo_pipeline.registry.policy import GatePolicy
from mammo_pipeline.registry.promotion import PromotionResult


def data_kind(synthetic: bool | None) -> str:
    if synthetic is None:
        return "data of unknown origin"
    return "SYNTHETIC data" if synthetic else "real data"


def gate_summary(
    settings: Settings, version: str, decision: GateDecision, result: PromotionResult | None
) -> list[str]:
    """Lines: the header (model, version, data, references, policy), one line per check, the
    statistics, ``verdict: PASSED|FAILED`` with the reasons, then what changed in the registry
    (``result``; None: a dry run that wrote nothing)."""
    from mammo_pipeline.registry.report_html import checks_text, statistics_lines

    version = decision.version or (result.version if result else "?")
    policy = (
        GatePolicy(**decision.policy) if decision.policy else GatePolicy.from_settings(settings)
    )
    synthetic = (decision.statistics or {}).get("synthetic")
    champion = f"v{decision.champion_version}" if decision.champion_version else "none"
    baseline = f"v{decision.baseline_version}" if decision.baseline_version else "none"
    verdict = result.verdict if result is not None else decision.verdict
    reasons = result.reasons if result is not None else decision.reasons
    lines = [
        f"{settings.registered_model_name} v{version} ({data_kind(synthetic)}): gate "
        f"{verdict.upper()} (champion: {champion}, baseline: {baseline})",
        f"policy: {policy.describe()}",
        checks_text(decision.checks),
        *statistics_lines(decision),
        f"verdict: {verdict.upper()}",
        *(f"  - {reason}" for reason in reasons),
    ]
    if result is None:
        return [*lines, "dry run: no tag written, no alias moved"]
    moves = ", ".join(f"{a} -> v{v}" for a, v in result.aliases_set.items()) or "none"
    lines.append(f"aliases moved: {moves}")
    if result.awaiting_approval:
        lines.append(
            f"v{version} is 'challenger' and awaits a person's approval: "
            f"mammo registry approve {version} --reason TEXT"
        )
    lines += [f"note: {note}" for note in result.notes]
    if result.report_artifact:
        lines.append(f"review report: run artifact {result.report_artifact}")
    return lines
