"""The ``baseline`` alias: the reference every candidate must not fall behind (besides the
champion), so that cumulative loss over any number of promotions stays within one tolerance.

It moves (:func:`update_baseline`, after a promotion by the gate) only to a champion that is
not worse than it on ANY gated metric (point estimates of the paired differences: ROC AUC, PR
AUC, sensitivity at the baseline's specificity, and the film metrics when both were judged on
the same film set) and better on at least one. Following a champion that is better on ROC AUC
alone let a walk of small sensitivity losses through: each step within the tolerance of the
last, the baseline following every one. Since every champion's lower bound against the
baseline must clear ``-tolerance`` and the baseline never gets worse on any metric, no metric
of any champion is ever more than one tolerance below the first baseline's.

A person may pin one with :func:`pin_baseline`; a version made champion by overriding the
gate never moves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import (
    FILM_REGRESSION_METRICS,
    REGRESSION_METRICS,
    GateDecision,
    utc_now,
)
from mammo_pipeline.registry.identity import Identity, acting
from mammo_pipeline.registry.journal import Plan
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.names import BASELINE, CHAMPION, TRUE, Review, Tag
from mammo_pipeline.registry.state import VersionState
from mammo_pipeline.registry.store import (
    get_version,
    mlflow_errors,
    read_aliases,
)

if TYPE_CHECKING:
    from mammo_pipeline.registry.review import ReviewResult


#: Version tag written by the gate: the point deltas vs the baseline (JSON), which an approval
#: days later uses to decide whether the baseline moves.
DELTAS_TAG = Tag.GATE_DELTAS_VS_BASELINE


def baseline_deltas(decision: GateDecision, baseline: str | None) -> dict[str, float] | None:
    """Point deltas (candidate - baseline) of every gated metric the decision compared with
    ``baseline``: the tile metrics, and the film metrics when the films were compared. None
    when it holds no complete comparison with it (nothing may then move the baseline)."""
    stats = decision.statistics or {}
    tiles, films = stats.get("vs_baseline"), stats.get("films_vs_baseline")
    if tiles is None and baseline is not None and decision.champion_version == baseline:
        tiles, films = stats.get("vs_champion"), stats.get("films_vs_champion")
    if not tiles or (baseline is not None and str(tiles.get("version")) != str(baseline)):
        return None
    out: dict[str, float] = {}
    for source, metrics in ((tiles, REGRESSION_METRICS), (films, FILM_REGRESSION_METRICS)):
        if source is None and metrics is FILM_REGRESSION_METRICS:
            continue  # films not compared (the baseline has none): the tile metrics decide
        for metric in metrics:
            delta = ((source.get("deltas") or {}).get(metric) or {}).get("delta")
            if delta is None:
                return None  # an undefined difference never moves the baseline
            out[metric] = float(delta)
    return out


def baseline_may_move(deltas: Mapping[str, float] | None) -> tuple[bool, str]:
    """(move?, why): only when no gated metric is worse and at least one is better."""
    if deltas is None:
        return False, "no complete comparison with the baseline"
    worse = {m: d for m, d in deltas.items() if d < 0}
    if worse:
        listed = ", ".join(f"{m} {d:+.4f}" for m, d in sorted(worse.items()))
        return False, f"worse than the baseline on {listed}"
    if not any(d > 0 for d in deltas.values()):
        return False, "no better than the baseline on any metric"
    listed = ", ".join(f"{m} {d:+.4f}" for m, d in sorted(deltas.items()))
    return True, f"not worse on any gated metric ({listed})"


def deltas_from_tag(tags: Mapping[str, str]) -> dict[str, float] | None:
    """The deltas the gate recorded in :data:`DELTAS_TAG` (None when absent or unreadable)."""
    try:
        data: Any = json.loads(tags.get(DELTAS_TAG) or "null")
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else None
    except (TypeError, ValueError):
        return None


def update_baseline(
    plan: Plan, version: str, deltas: Mapping[str, float] | None, notes: list[str]
) -> dict[str, str]:
    """After a promotion by the gate: the first champion becomes the ``baseline``; later the
    baseline moves to the new champion only when :func:`baseline_may_move`. A baseline pinned
    by a person (tag ``baseline_pinned=true``) is never moved here."""
    current = plan.aliases.get(BASELINE)
    if current == version:
        return {}
    if current is not None:
        if VersionState.of(current, plan.tags_of(current)).pinned:
            return {}
        move, why = baseline_may_move(deltas)
        if not move:
            notes.append(f"baseline stays v{current} (v{version}: {why})")
            return {}
        notes.append(f"baseline v{current} -> v{version}: {why}")
    plan.set_tags(version, {Tag.BASELINE_SINCE: utc_now()})
    plan.set_alias(BASELINE, version)
    return {BASELINE: version}


def pin_baseline(
    settings: Settings | None, version: str | int, reason: str, who: Identity | None = None
) -> ReviewResult:
    """A person pins ``version`` as the ``baseline`` every later candidate is compared with
    (the automatic moves stop while it is pinned). Only a vetted version can be pinned."""
    from mammo_pipeline.registry.review import ReviewResult, require_reason, review_tags

    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = require_reason(reason, "pin")
    actor = acting(s, who, "pin the baseline")
    person = actor.name
    at = utc_now()
    client = mlflow_client(s)
    with registry_lock(s), mlflow_errors(f"pinning {name!r} v{version}"):
        mv = get_version(client, name, version)
        problem = VersionState.of(version, mv.tags or {}).vetting_problem()
        if problem:
            raise MammoError(f"cannot pin v{version} as the baseline: {problem}")
        aliases = read_aliases(client, name)
        old = aliases.get(BASELINE)
        plan = Plan.start(
            client, name, f"baseline pin on v{version} by {person}", version, aliases,
            {version: mv.tags or {}},
        )  # fmt: skip
        if old is not None and old != version:
            plan.delete_tag(old, Tag.BASELINE_PINNED)
        plan.set_tags(
            version,
            {
                Tag.BASELINE_PINNED: TRUE,
                Tag.BASELINE_PINNED_BY: person,
                Tag.BASELINE_PINNED_AT: at,
                Tag.BASELINE_PINNED_REASON: reason,
                **review_tags(mv.tags or {}, Review.PINNED_BASELINE, actor, at, reason),
            },
        )
        plan.set_alias(BASELINE, version)
        plan.commit()
        after = read_aliases(client, name)
    return ReviewResult.of(
        "pin",
        name,
        version,
        person,
        at,
        reason,
        aliases.get(CHAMPION),
        after,
        message=f"baseline is now v{version} (pinned; was {'v' + old if old else 'none'})",
    )
