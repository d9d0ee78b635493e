"""Signed rejections: a reviewer's "no" is signed like an approval or a gate decision, so a
rejection edited by hand (who, when, why) or quietly removed from the tags is detected.

* :func:`rejection_record` (kind ``mammo.rejection``): model, version, run, who (and how the
  platform authenticated them), when and why. :func:`~.review.reject` writes it to the tag
  ``signed_review`` (kept while the rejection stands; an approval with
  ``--override-rejection`` removes it) and to ``signed_decision`` (the version's latest
  decision, which the deployer and the service refuse: a rejected version is not served
  even with its review tags deleted).
* :func:`signed_rejection`: the valid rejection record about this version, if any (the gate's
  ``not_rejected`` check reads it as well as the tags).
* :func:`rejection_problem`: what ``VersionState(verify=True)``, the deployer and the service
  report: review tags saying ``rejected`` without a valid signed record, tags that differ
  from the signed record, or a signed rejection whose tags no longer say ``rejected``.

Not detected (see ``docs/threat-model.md``): an MLflow editor who deletes every trace of a
rejection and writes back a copy of the version's earlier signed gate decision (a replay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mammo_pipeline.common.signing import Signed, sign, signing_key, trusted_keys, verify
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.names import SIGNED_REVIEW, Review, Tag

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from mammo_pipeline.registry.identity import Identity

REJECTION_KIND = "mammo.rejection"
#: Review tag -> the field of the signed rejection it must equal.
_SIGNED_FIELDS = (
    (Tag.REVIEW_BY, "rejected_by"),
    (Tag.REVIEW_BY_SOURCE, "source"),
    (Tag.REVIEW_AT, "rejected_at"),
    (Tag.REVIEW_REASON, "reason"),
)


def rejection_record(
    settings: Settings, name: str, mv: ModelVersion, *, who: Identity, at: str, reason: str
) -> str:
    """``who``'s signed rejection of ``mv``; raises :class:`ConfigError` when this process
    holds no signing key."""
    return sign(
        {
            "kind": REJECTION_KIND,
            "model": name,
            "version": str(mv.version),
            "run_id": mv.run_id or None,
            "rejected_by": who.name,
            "source": who.source,
            "rejected_at": at,
            "reason": reason,
        },
        signing_key(settings),
    )


def _about(payload: Mapping[str, object], name: str, version: str, run_id: str | None) -> bool:
    return (payload.get("model"), str(payload.get("version")), payload.get("run_id")) == (
        name,
        str(version),
        run_id or None,
    )


def signed_rejection(
    settings: Settings, name: str, version: str, run_id: str | None, tags: Mapping[str, str]
) -> Signed | None:
    """The version's signed rejection when one verifies and is about this version."""
    try:
        signed = verify(tags.get(SIGNED_REVIEW), trusted_keys(settings), "", (REJECTION_KIND,))
    except MammoError:
        return None
    return signed if _about(signed.payload, name, version, run_id) else None


def rejection_problem(
    settings: Settings, name: str, version: str, run_id: str | None, tags: Mapping[str, str]
) -> str | None:
    """Why the version's rejection record cannot be trusted (None: there is none, or the
    review tags are the signed rejection's)."""
    record = tags.get(SIGNED_REVIEW)
    rejected = tags.get(Tag.REVIEW) == Review.REJECTED
    if not record and not rejected:
        return None
    what = f"v{version}'s rejection"
    try:
        signed = verify(record, trusted_keys(settings), what, (REJECTION_KIND,))
    except MammoError as exc:
        return f"{exc}: a rejection is recorded by `mammo registry reject`, not by hand"
    p = signed.payload
    if not _about(p, name, version, run_id):
        return (
            f"{what}: the signed record is about {p.get('model')} v{p.get('version')} (run "
            f"{p.get('run_id')}): copied from another version"
        )
    if not rejected:
        return (
            f"v{version} was rejected by {p.get('rejected_by')} at {p.get('rejected_at')} "
            f"(signed: {p.get('reason')}), but its review tags say "
            f"{tags.get(Tag.REVIEW) or 'nothing'}: a rejection is lifted only by an approval "
            f"(`mammo registry approve {version} --override-rejection --reason ...`)"
        )
    edited = [
        f"{tag}={tags.get(tag)!r} is signed as {p.get(field)!r}"
        for tag, field in _SIGNED_FIELDS
        if (tags.get(tag) or None) != (p.get(field) or None)
    ]
    if edited:
        return f"{what}: the review tags are not the signed rejection ({'; '.join(edited)})"
    return None
