"""The ``baseline`` alias: the reference every candidate must not fall behind (besides the
champion), so that cumulative loss over any number of promotions stays within one tolerance.

It follows the best version that ever passed (moved by :mod:`.promotion` after a promotion
that beats it) unless a person pinned one with :func:`pin_baseline`.
"""

from __future__ import annotations

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import utc_now
from mammo_pipeline.registry.journal import Plan
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.names import BASELINE, CHAMPION
from mammo_pipeline.registry.review import ReviewResult, require_reason, review_tags
from mammo_pipeline.registry.store import (
    get_version,
    mlflow_errors,
    read_aliases,
    reviewer,
)
from mammo_pipeline.registry.vetting import vetting_problem


def pin_baseline(
    settings: Settings | None, version: str | int, reason: str, who: str | None = None
) -> ReviewResult:
    """A person pins ``version`` as the ``baseline`` every later candidate is compared with
    (the automatic moves stop while it is pinned). Only a vetted version can be pinned."""
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = require_reason(reason, "pin")
    person = reviewer(s, who)
    at = utc_now()
    client = mlflow_client(s)
    with registry_lock(s), mlflow_errors(f"pinning {name!r} v{version}"):
        mv = get_version(client, name, version)
        problem = vetting_problem(version, mv.tags or {})
        if problem:
            raise MammoError(f"cannot pin v{version} as the baseline: {problem}")
        aliases = read_aliases(client, name)
        old = aliases.get(BASELINE)
        plan = Plan.start(
            client, name, f"baseline pin on v{version} by {person}", version, aliases,
            {version: mv.tags or {}},
        )  # fmt: skip
        if old is not None and old != version:
            plan.delete_tag(old, "baseline_pinned")
        plan.set_tags(
            version,
            {
                "baseline_pinned": "true",
                "baseline_pinned_by": person,
                "baseline_pinned_at": at,
                "baseline_pinned_reason": reason,
                **review_tags(mv.tags or {}, "pinned_baseline", person, at, reason),
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
