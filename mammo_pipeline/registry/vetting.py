"""Which versions may be served: the rule the deployer and the service both apply, so that
moving the ``champion`` alias by hand in the MLflow UI is not enough to serve a model.

A version is vetted when its tags show ``gate=passed`` (the automatic gate) or ``gate=manual``
with ``review=approved`` and a named reviewer (a person's recorded decision), and it has not
been rejected since. A version that passed the gate but awaits a person's approval
(``awaiting_approval=true``, with ``MAMMO_REQUIRE_APPROVAL``) is not vetted yet.
"""

from __future__ import annotations

from collections.abc import Mapping


def vetting_problem(version: str, tags: Mapping[str, str]) -> str | None:
    """Why ``version`` may not be served (None when it may)."""
    gate = tags.get("gate", "")
    review = tags.get("review", "")
    if review == "rejected":
        who = tags.get("review_by", "?")
        return f"v{version} was rejected by {who}: {tags.get('review_reason', '')}".strip()
    if tags.get("awaiting_approval") == "true":
        return (
            f"v{version} passed the gate but awaits a person's approval "
            f"(`mammo registry approve {version} --reason ...`); it is not vetted until then"
        )
    if gate == "passed":
        return None
    if gate == "manual":
        if review == "approved" and tags.get("review_by"):
            return None
        return f"v{version} has gate=manual without a recorded approval"
    what = f"gate={gate}" if gate else "no gate verdict"
    reasons = tags.get("gate_reasons")
    return (
        f"v{version} is not vetted ({what}"
        + (f": {reasons}" if reasons and gate == "failed" else "")
        + "): only versions with gate=passed or an approved gate=manual are served"
    )
