"""Which versions may be served: the rule the deployer and the service both apply, so that
moving the ``champion`` alias by hand in the MLflow UI is not enough to serve a model.

A version is vetted when its tags show ``gate=passed`` (the automatic gate) or ``gate=manual``
with ``review=approved`` and a named reviewer (a person's recorded decision), and it has not
been rejected since. A version that passed the gate but awaits a person's approval
(``awaiting_approval=true``, with ``MAMMO_REQUIRE_APPROVAL``) is not vetted yet. The rule is
:meth:`.state.VersionState.tag_problem`; the deployer and the service also require the signed
decision (:func:`.attestation.servable_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping

from mammo_pipeline.registry.state import VersionState


def vetting_problem(version: str, tags: Mapping[str, str]) -> str | None:
    """Why the tags say ``version`` may not be served (None when they allow it)."""
    return VersionState.of(version, tags).tag_problem()
