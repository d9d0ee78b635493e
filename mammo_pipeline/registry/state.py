"""Where a model version stands in its lifecycle, read once: :class:`VersionState`.

Derived from the version's tags (:class:`~.names.Tag`), its aliases and, when asked, the
signed decision (:func:`~.attestation.verified_decision`): the gate verdict (automatic, or a
person's ``manual`` one, with an override recorded), whether it awaits approval, the last
review, whether it is vetted (and why not), pinned as the baseline, live (the deployer's
record) and its aliases. Vetting, listing, review, the CLI and the DAG tasks read this object,
never the raw tags; the transitions between the states are in ``docs/architecture.md``.

The tags are labels anybody with MLflow write access can edit; with ``verify=True`` the
signature, which only the gate's and the approvers' keys can make, has the last word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mammo_pipeline.registry.names import (
    BASELINE,
    CHAMPION,
    TRUE,
    Deployed,
    Review,
    Tag,
    Verdict,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mammo_pipeline.config import Settings


@dataclass(frozen=True)
class ReviewRecord:
    """The latest manual action on a version (:class:`~.names.Review`)."""

    action: str
    by: str | None
    source: str | None
    at: str | None
    reason: str

    @property
    def label(self) -> str:
        """``approved by alice (airflow user)``; the bare action when nobody is named."""
        if not self.by:
            return self.action
        return f"{self.action} by {self.by}" + (f" ({self.source} user)" if self.source else "")


@dataclass(frozen=True)
class Override:
    """A person made a version the champion although its automatic verdict was ``auto``."""

    auto: str
    by: str | None
    at: str | None
    reason: str | None


@dataclass(frozen=True)
class VersionState:
    """One version's place in the lifecycle (see the module docstring)."""

    version: str
    #: The ``gate`` tag: passed, failed, manual (a person's approval), pending; "" when none.
    gate: str
    gate_reasons: str
    #: The automatic gate's verdict and reasons (``gate_auto`` once a person decided).
    auto_verdict: str
    auto_reasons: str
    gate_at: str | None
    awaiting_approval: bool
    review: ReviewRecord | None
    override: Override | None
    pinned: bool
    #: The deployer's record: live, failed, or None (never deployed).
    deploy: str | None
    deploy_reason: str | None
    aliases: tuple[str, ...] = ()
    #: The champion this version replaced (where a rollback from it goes).
    replaced_champion: str | None = None
    #: Whether the signed decision was checked, and why it does not allow serving (None: it
    #: does, or it was not checked).
    signature_checked: bool = False
    signature_problem: str | None = None

    @classmethod
    def of(
        cls,
        version: str | int,
        tags: Mapping[str, str],
        aliases: Iterable[str] = (),
        *,
        signature_problem: str | None = None,
        signature_checked: bool = False,
    ) -> VersionState:
        """The state the tags (and, when checked, the signature) describe."""
        gate = tags.get(Tag.GATE, "")
        manual = gate == Verdict.MANUAL
        auto = (tags.get(Tag.GATE_AUTO) if manual else gate) or Verdict.PENDING
        auto_reasons = tags.get(Tag.GATE_REASONS_AUTO if manual else Tag.GATE_REASONS, "")
        action = tags.get(Tag.REVIEW, "")
        review = (
            ReviewRecord(
                action,
                tags.get(Tag.REVIEW_BY) or None,
                tags.get(Tag.REVIEW_BY_SOURCE) or None,
                tags.get(Tag.REVIEW_AT) or None,
                tags.get(Tag.REVIEW_REASON, ""),
            )
            if action
            else None
        )
        override = (
            Override(
                tags.get(Tag.GATE_AUTO, "?"),
                tags.get(Tag.GATE_OVERRIDE_BY),
                tags.get(Tag.GATE_OVERRIDE_AT),
                tags.get(Tag.GATE_OVERRIDE_REASON),
            )
            if tags.get(Tag.GATE_OVERRIDE) == TRUE
            else None
        )
        return cls(
            version=str(version),
            gate=gate,
            gate_reasons=tags.get(Tag.GATE_REASONS, ""),
            auto_verdict=auto,
            auto_reasons=auto_reasons or "",
            gate_at=tags.get(Tag.GATE_AT) or None,
            awaiting_approval=tags.get(Tag.AWAITING_APPROVAL) == TRUE,
            review=review,
            override=override,
            pinned=tags.get(Tag.BASELINE_PINNED) == TRUE,
            deploy=tags.get(Tag.DEPLOY) or None,
            deploy_reason=tags.get(Tag.DEPLOY_REASON) or None,
            aliases=tuple(sorted(aliases)),
            replaced_champion=tags.get(Tag.REPLACED_CHAMPION) or None,
            signature_checked=signature_checked,
            signature_problem=signature_problem,
        )

    # --- reading it -------------------------------------------------------------------------
    @property
    def rejected(self) -> bool:
        return self.review is not None and self.review.action == Review.REJECTED

    @property
    def approved(self) -> bool:
        return self.review is not None and self.review.action == Review.APPROVED

    @property
    def champion(self) -> bool:
        return CHAMPION in self.aliases

    @property
    def baseline(self) -> bool:
        return BASELINE in self.aliases

    @property
    def live(self) -> bool:
        """The deployer recorded it as serving (the live port is asked by ``mammo status``)."""
        return self.deploy == Deployed.LIVE

    def rejection(self) -> str:
        """``v3 was rejected by bob: artefacts`` (for refusals)."""
        by = (self.review.by if self.review else None) or "?"
        why = self.review.reason if self.review else ""
        return f"v{self.version} was rejected by {by}: {why}".strip()

    def tag_problem(self) -> str | None:
        """Why the tags alone say the version may not be served (None: they allow it).

        Vetted: ``gate=passed`` (the automatic gate), or ``gate=manual`` with an approval by a
        named reviewer; never a rejected version or one still awaiting approval."""
        v = self.version
        if self.rejected:
            return self.rejection()
        if self.awaiting_approval:
            return (
                f"v{v} passed the gate but awaits a person's approval "
                f"(`mammo registry approve {v} --reason ...`); it is not vetted until then"
            )
        if self.gate == Verdict.PASSED:
            return None
        if self.gate == Verdict.MANUAL:
            if self.approved and self.review is not None and self.review.by:
                return None
            return f"v{v} has gate=manual without a recorded approval"
        what = f"gate={self.gate}" if self.gate else "no gate verdict"
        reasons = self.gate_reasons if self.gate == Verdict.FAILED else ""
        return (
            f"v{v} is not vetted ({what}"
            + (f": {reasons}" if reasons else "")
            + "): only versions with gate=passed or an approved gate=manual are served"
        )

    def vetting_problem(self) -> str | None:
        """Why the version may not be served: the tags' rule, and (when checked) the
        signature's. None: vetted."""
        problems = [p for p in (self.tag_problem(), self.signature_problem) if p]
        return "; ".join(problems) or None

    @property
    def vetted(self) -> bool:
        return self.vetting_problem() is None

    def awaiting_problem(self) -> str | None:
        """Why an answer to the approval request may not promote the version now (None: it
        may): it was rejected since, or it is no longer a passed version awaiting approval."""
        v = self.version
        if self.rejected:
            by = (self.review.by if self.review else None) or "?"
            why = self.review.reason if self.review else ""
            return f"v{v} was rejected by {by} ({why}) since the gate ran"
        if self.gate != Verdict.PASSED or not self.awaiting_approval:
            return (
                f"v{v} no longer awaits approval (gate={self.gate or 'none'}, "
                f"awaiting_approval={'true' if self.awaiting_approval else 'false'})"
            )
        return None

    @property
    def gate_label(self) -> str:
        """The verdict as a reviewer should read it: an override or a wait says so."""
        gate = self.gate or "-"
        if self.override is not None:
            return f"{gate}: OVERRIDE of gate={self.override.auto} by {self.override.by or '?'}"
        if self.awaiting_approval:
            return f"{gate}, awaiting approval"
        return gate

    @property
    def review_label(self) -> str:
        return self.review.label if self.review is not None else ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(vetted=self.vetted, vetting_problem=self.vetting_problem(), live=self.live)
        return d


def version_state(
    settings: Settings,
    client: MlflowClient,
    version: str | int,
    *,
    aliases: Mapping[str, str] | None = None,
    verify: bool = False,
) -> VersionState:
    """Read ``version``'s state from the registry (its aliases from ``aliases`` when given).
    ``verify``: also check its signed decision when the tags would allow serving."""
    from mammo_pipeline.registry.store import aliases_of, get_version, read_aliases

    name = settings.registered_model_name
    mv = get_version(client, name, version)
    held = aliases if aliases is not None else read_aliases(client, name)
    return state_of(settings, mv, aliases_of(held, str(mv.version)), verify=verify)


def state_of(
    settings: Settings, mv: Any, aliases: Iterable[str] = (), *, verify: bool = False
) -> VersionState:
    """The state of a model version already read (``mv``: an MLflow ``ModelVersion``)."""
    tags = mv.tags or {}
    if not verify:
        return VersionState.of(str(mv.version), tags, aliases)
    return verified_state(settings, str(mv.version), mv.run_id, tags, aliases)


def verified_state(
    settings: Settings,
    version: str,
    run_id: str | None,
    tags: Mapping[str, str],
    aliases: Iterable[str] = (),
) -> VersionState:
    """The state of ``version`` (run ``run_id``) with its signed records checked: the signed
    decision when the tags would allow serving, and any rejection's record."""
    from mammo_pipeline.registry.attestation import verified_decision
    from mammo_pipeline.registry.rejection import rejection_problem

    name = settings.registered_model_name
    state = VersionState.of(version, tags, aliases)
    # a rejection's record is checked even though the tags already refuse the version: an
    # edited or unsigned rejection is reported (who rejected it, and why, is evidence)
    problem = rejection_problem(settings, name, version, run_id, tags)
    if problem is None and state.tag_problem() is None:
        signed = verified_decision(settings, name, version, run_id, tags)
        problem = signed if isinstance(signed, str) else None
    return VersionState.of(
        version, tags, aliases, signature_problem=problem, signature_checked=True
    )
