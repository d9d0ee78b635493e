"""The registry's vocabulary, defined once: alias names, the metrics shown in listings, the
report's place on a run and the size limits of tag values."""

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

#: Signed records (:mod:`.attestation`): the run's signed evaluation, copied onto the version
#: at registration (written by training, which cannot import the registry, hence defined
#: there); the signed gate decision or approval that the deployer and the service verify.
SIGNED_EVALUATION: Final = EVALUATION_SIGNATURE_TAG
SIGNED_DECISION: Final = "signed_decision"

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
