"""The registry's vocabulary, defined once: alias names, version tag keys (:class:`Tag`) and
their values (:class:`Verdict`, :class:`Review`, :class:`Deployed`), the metrics shown in
listings, the report's place on a run and the size limits of tag values.

Tags are labels for people and tools: what may be served is decided on the signed record
(:data:`SIGNED_DECISION`, :mod:`.attestation`) together with them (:mod:`.state`).
"""

from __future__ import annotations

from typing import Final

from mammo_pipeline.registry.decision import TEST_METRICS
from mammo_pipeline.training.signed_evaluation import EVALUATION_SIGNATURE_TAG

#: The served version.
CHAMPION: Final = "champion"
#: The champion it replaced (the rollback target).
PREVIOUS: Final = "previous"
#: The last candidate that did not pass, or that passed and waits for a reviewer.
CHALLENGER: Final = "challenger"
#: The reference that bounds cumulative regression: the best version that ever passed (moved
#: automatically) or one a person pinned (`mammo registry pin V --reason`).
BASELINE: Final = "baseline"
ALIASES: Final = (CHAMPION, PREVIOUS, CHALLENGER, BASELINE)


class Tag:
    """Keys of the tags a model version carries (one place; grep the constant, not the text)."""

    #: The gate's verdict (:class:`Verdict`), why, when, and under what policy.
    GATE: Final = "gate"
    GATE_REASONS: Final = "gate_reasons"
    GATE_AT: Final = "gate_at"
    GATE_POLICY: Final = "gate_policy"
    GATE_CHECKS: Final = "gate_checks"
    GATE_MIN_PRECISION: Final = "gate_min_precision"
    GATE_MIN_RECALL: Final = "gate_min_recall"
    GATE_TOLERANCE: Final = "gate_tolerance"
    GATE_CHAMPION_VERSION: Final = "gate_champion_version"
    GATE_BASELINE_VERSION: Final = "gate_baseline_version"
    #: Point deltas vs the baseline (JSON), for an approval days later (:mod:`.baseline`).
    GATE_DELTAS_VS_BASELINE: Final = "gate_deltas_vs_baseline"
    #: With ``gate=manual`` (a person's approval): the automatic verdict and its reasons.
    GATE_AUTO: Final = "gate_auto"
    GATE_REASONS_AUTO: Final = "gate_reasons_auto"
    #: An approval of a version whose automatic verdict was not ``passed``.
    GATE_OVERRIDE: Final = "gate_override"
    GATE_OVERRIDE_BY: Final = "gate_override_by"
    GATE_OVERRIDE_AT: Final = "gate_override_at"
    GATE_OVERRIDE_REASON: Final = "gate_override_reason"
    #: ``"true"`` while a passed version waits for a person (``MAMMO_REQUIRE_APPROVAL``).
    AWAITING_APPROVAL: Final = "awaiting_approval"
    #: The latest manual action (:class:`Review`), by whom (and how authenticated), when, why;
    #: ``review_history``: every manual action, JSON.
    REVIEW: Final = "review"
    REVIEW_BY: Final = "review_by"
    REVIEW_BY_SOURCE: Final = "review_by_source"
    REVIEW_AT: Final = "review_at"
    REVIEW_REASON: Final = "review_reason"
    REVIEW_HISTORY: Final = "review_history"
    #: The champion this version replaced (where a rollback goes next).
    REPLACED_CHAMPION: Final = "replaced_champion"
    REINSTATED_BY: Final = "reinstated_by"
    REINSTATED_AT: Final = "reinstated_at"
    REINSTATED_REASON: Final = "reinstated_reason"
    #: A baseline a person pinned (the automatic moves stop while it is).
    BASELINE_PINNED: Final = "baseline_pinned"
    BASELINE_PINNED_BY: Final = "baseline_pinned_by"
    BASELINE_PINNED_AT: Final = "baseline_pinned_at"
    BASELINE_PINNED_REASON: Final = "baseline_pinned_reason"
    BASELINE_SINCE: Final = "baseline_since"
    #: The deployer's record (:class:`Deployed`).
    DEPLOY: Final = "deploy"
    DEPLOY_AT: Final = "deploy_at"
    DEPLOY_REASON: Final = "deploy_reason"
    DEPLOY_ROLLED_BACK_TO: Final = "deploy_rolled_back_to"
    SYNTHETIC: Final = "synthetic"


class Verdict:
    """Values of :attr:`Tag.GATE`."""

    PASSED: Final = "passed"
    FAILED: Final = "failed"
    #: Made champion by a person's approval (the automatic verdict in :attr:`Tag.GATE_AUTO`).
    MANUAL: Final = "manual"
    #: Registered, not gated yet.
    PENDING: Final = "pending"


class Review:
    """Values of :attr:`Tag.REVIEW` (the manual actions)."""

    APPROVED: Final = "approved"
    REJECTED: Final = "rejected"
    ROLLED_BACK: Final = "rolled_back"
    PINNED_BASELINE: Final = "pinned_baseline"


class Deployed:
    """Values of :attr:`Tag.DEPLOY`."""

    LIVE: Final = "live"
    FAILED: Final = "failed"


#: The value of a boolean tag that is set (``awaiting_approval``, ``gate_override``...).
TRUE: Final = "true"

#: Signed records (:mod:`.attestation`): the run's signed evaluation, copied onto the version
#: at registration (written by training, which cannot import the registry, hence defined
#: there); the latest signed decision (gate decision, approval or rejection) that the
#: deployer and the service verify; the signed rejection the review tags must match while it
#: stands (:mod:`.rejection`).
SIGNED_EVALUATION: Final = EVALUATION_SIGNATURE_TAG
SIGNED_DECISION: Final = "signed_decision"
SIGNED_REVIEW: Final = "signed_review"

#: Metrics of ``mammo registry list`` (a subset of the gate's test metrics, plus the threshold).
LIST_METRICS: Final[tuple[str, ...]] = (
    *(m for m in TEST_METRICS if m in {"test_precision", "test_recall", "test_f1", "test_roc_auc"}),
    "decision_threshold",
)

#: Plots of a training run, in the order the review report shows them first.
PLOT_ARTIFACTS: Final[tuple[str, ...]] = (
    "evaluation/confusion_matrix.png",
    "evaluation/roc_pr_curves.png",
    "training_curves.png",
)
REVIEW_DIR: Final = "review"
MAX_TAG_VALUE: Final = 5000
MAX_EMBEDDED_IMAGE_BYTES: Final = 4 * 1024 * 1024
