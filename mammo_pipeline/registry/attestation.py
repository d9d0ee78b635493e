"""Signed evidence, decisions and approvals (:mod:`mammo_pipeline.common.signing`), and the
check the deployer and the service make before serving a version.

* **At gate time** (:func:`attest_candidate`): the candidate's signed evaluation must verify
  against the trusted keys and name the very predictions, test manifest, threshold and film
  predictions the gate read; then the gate re-scores the registered model
  (:mod:`.rescore`). :func:`attest_reference` checks a champion's or baseline's evidence the
  same way (no re-scoring: it was re-scored when it was gated).
* **The verdict** is signed by :mod:`.promotion` (:func:`decision_record`, kind
  ``mammo.gate_decision``): model, version, run, verdict, awaiting approval, policy, the
  references, the evidence digests with the re-scoring, the model files' digest and the time.
  A person's approval is signed too (:func:`approval_record`, kind ``mammo.approval``), and
  so is a rejection (:mod:`.rejection`). Each goes to the version tag ``signed_decision``:
  the latest decision about the version.
* **Before serving** (:func:`signature_problem`, :func:`servable_problem`): that record must
  verify, be about this model, version and run, say ``passed`` and not awaiting approval (or
  be an approval), and the files to be served must have its model digest. A tag is a label
  for people; the signature is the authority.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.signing import (
    SignatureError,
    Signed,
    directory_sha256,
    sha256_hex,
    sign,
    signing_key,
    trusted_keys,
    verify,
)
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import utc_now
from mammo_pipeline.registry.names import SIGNED_DECISION, SIGNED_EVALUATION
from mammo_pipeline.training.signed_evaluation import EVALUATION_KIND

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mammo_pipeline.registry.evidence import Evidence
    from mammo_pipeline.registry.policy import GatePolicy

DECISION_KIND = "mammo.gate_decision"
APPROVAL_KIND = "mammo.approval"
#: Run-tag name of each digest the signed evaluation vouches for -> the Evidence attribute.
_SIGNED_DIGESTS = (
    ("predictions_sha256", "predictions_sha256"),
    ("test_manifest_sha256", "test_manifest_sha256"),
)


# --- gate time ----------------------------------------------------------------------------
def verified_evaluation(settings: Settings, evidence: Evidence) -> Signed | str:
    """The candidate's signed evaluation, checked against what the gate read from the run;
    or why it cannot be trusted."""
    what = f"the evaluation of v{evidence.version} (run {evidence.run_id})"
    try:
        signed = verify(
            evidence.signed_evaluation, trusted_keys(settings), what, (EVALUATION_KIND,)
        )
    except MammoError as exc:
        hint = (
            f": re-run `mammo evaluate --run-id {evidence.run_id}` where the signing key is"
            if evidence.signed_evaluation is None
            else ""
        )
        return f"{exc}{hint}"
    p = signed.payload
    if p.get("run_id") != evidence.run_id:
        return f"{what}: the signed evaluation is about run {p.get('run_id')}"
    for key, attr in _SIGNED_DIGESTS:
        if p.get(key) != getattr(evidence, attr):
            return (
                f"{what}: {key} {str(getattr(evidence, attr))[:12]} on the run is not the "
                f"signed {str(p.get(key))[:12]}: the evidence was replaced after evaluation"
            )
    if evidence.threshold is None or p.get("decision_threshold") != evidence.threshold:
        return (
            f"{what}: decision_threshold {evidence.threshold} on the run is not the signed "
            f"{p.get('decision_threshold')}"
        )
    film = (p.get("tags") or {}).get("film_predictions_sha256")
    if evidence.film_predictions_sha256 is not None and film != evidence.film_predictions_sha256:
        return f"{what}: the film predictions are not the signed ones: replaced after evaluation"
    if not p.get("model_sha256"):
        return f"{what}: the signed evaluation names no model files digest"
    return signed


def attest_candidate(settings: Settings, name: str, evidence: Evidence) -> None:
    """Check the candidate's evidence itself; a problem goes to ``evidence.problem`` (fails
    ``evidence_intact``), else ``evidence.attested`` records what was checked."""
    from mammo_pipeline.registry.rescore import rescore

    if not evidence.usable:
        return
    problems: list[str] = []
    signed = verified_evaluation(settings, evidence)
    if isinstance(signed, str):
        problems.append(signed)
        model_sha256 = None
    else:
        model_sha256 = str(signed.payload["model_sha256"])
    try:  # even when the signature failed: the report then says what the model really does
        result = rescore(settings, name, evidence.version, evidence, model_sha256)
    except Exception as exc:  # noqa: BLE001 - any failure to re-score fails closed
        result = f"re-scoring failed: {type(exc).__name__}: {exc}"
    if isinstance(result, str):
        problems.append(f"v{evidence.version}: {result}")
    elif not result.passed:
        problems.append(f"v{evidence.version}: {result.describe()}")
    if problems:
        evidence.problem = "; ".join(problems)
        return
    assert not isinstance(signed, str) and not isinstance(result, str)
    evidence.attested = {
        "model_sha256": model_sha256,
        "predictions_sha256": evidence.predictions_sha256,
        "test_manifest_sha256": evidence.test_manifest_sha256,
        "film_predictions_sha256": evidence.film_predictions_sha256,
        "evaluation_sha256": sha256_hex((evidence.signed_evaluation or "").encode()),
        "evaluation_key_id": signed.key_id,
        "rescore": result.to_dict(),
        "summary": result.describe(),
    }


def attest_reference(settings: Settings, evidence: Evidence) -> None:
    """A champion's or baseline's evidence must still be its signed evaluation's."""
    if evidence.usable:
        signed = verified_evaluation(settings, evidence)
        if isinstance(signed, str):
            evidence.problem = signed


# --- signed verdicts ----------------------------------------------------------------------
def decision_record(
    settings: Settings,
    *,
    name: str,
    version: str,
    run_id: str | None,
    verdict: str,
    awaiting_approval: bool,
    policy: GatePolicy,
    champion: str | None,
    baseline: str | None,
    evidence: Mapping[str, Any] | None,
) -> str:
    """The signed gate decision (a tag value); raises :class:`ConfigError` without a key."""
    evidence = dict(evidence or {})
    evidence.pop("summary", None)
    return sign(
        {
            "kind": DECISION_KIND,
            "model": name,
            "version": version,
            "run_id": run_id,
            "verdict": verdict,
            "awaiting_approval": awaiting_approval,
            "policy": policy.to_dict(),
            "champion_version": champion,
            "baseline_version": baseline,
            "evidence": evidence,
            "model_sha256": evidence.get("model_sha256"),
            "decided_at": utc_now(),
        },
        signing_key(settings),
    )


def approval_record(
    settings: Settings,
    client: MlflowClient,
    name: str,
    mv: ModelVersion,
    *,
    who: str,
    at: str,
    reason: str,
    gate: str,
) -> str:
    """A person's signed approval of ``mv`` (``gate``: the automatic verdict it approves or
    overrides). It binds the files the gate or the evaluation vouched for (the signed
    decision's or evaluation's model digest); for a version with neither, the files as they
    are now. Raises :class:`ConfigError` when this process holds no signing key."""
    key = signing_key(settings)
    version = str(mv.version)
    return sign(
        {
            "kind": APPROVAL_KIND,
            "model": name,
            "version": version,
            "run_id": mv.run_id or None,
            "approved_by": who,
            "approved_at": at,
            "reason": reason,
            "gate": gate,
            "model_sha256": _vouched_digest(settings, client, name, mv),
            "decided_at": utc_now(),
        },
        key,
    )


def _vouched_digest(
    settings: Settings, client: MlflowClient, name: str, mv: ModelVersion
) -> str | None:
    trusted = trusted_keys(settings)
    version = str(mv.version)
    try:
        p = verify((mv.tags or {}).get(SIGNED_DECISION), trusted, "", (DECISION_KIND,)).payload
        if p.get("model") == name and str(p.get("version")) == version and p.get("model_sha256"):
            return str(p["model_sha256"])
    except SignatureError:
        pass
    if mv.run_id:
        try:
            record = client.get_run(mv.run_id).data.tags.get(SIGNED_EVALUATION)
            p = verify(record, trusted, "", (EVALUATION_KIND,)).payload
            if p.get("run_id") == mv.run_id and p.get("model_sha256"):
                return str(p["model_sha256"])
        except (SignatureError, MammoError):
            pass
    try:
        return registered_files_sha256(settings, name, version)
    except Exception:  # noqa: BLE001 - no readable files: the approval binds none
        return None


# --- before serving -----------------------------------------------------------------------
def registered_files_sha256(settings: Settings, name: str, version: str) -> str:
    """Digest of ``models:/<name>/<version>`` as the service downloads it."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import quiet_artifact_downloads, store_uri, use_store

    use_store(settings)
    with tempfile.TemporaryDirectory(prefix="mammo-verify-") as tmp, quiet_artifact_downloads():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=tmp,
            tracking_uri=store_uri(settings.mlflow_tracking_uri),
        )
        return directory_sha256(Path(local))


def verified_decision(
    settings: Settings, name: str, version: str, run_id: str | None, tags: Mapping[str, str]
) -> Signed | str:
    """The version's signed decision when it allows serving; else why not (a signed
    rejection, :mod:`.rejection`, also when the review tags no longer show it)."""
    from mammo_pipeline.registry.rejection import REJECTION_KIND, rejection_problem

    what = f"v{version}'s gate decision"
    rejection = rejection_problem(settings, name, version, run_id, tags)
    if rejection:
        return rejection
    kinds = (DECISION_KIND, APPROVAL_KIND, REJECTION_KIND)
    try:
        signed = verify(tags.get(SIGNED_DECISION), trusted_keys(settings), what, kinds)
    except MammoError as exc:
        return f"{exc}: only a decision signed by a trusted key (the gate, an approval) is served"
    p = signed.payload
    about = (p.get("model"), str(p.get("version")), p.get("run_id"))
    if about != (name, str(version), run_id or None):
        return (
            f"{what}: the signed record is about {about[0]} v{about[1]} (run {about[2]}), not "
            f"{name} v{version} (run {run_id}): copied from another version"
        )
    if p.get("kind") == REJECTION_KIND:
        return (
            f"{what}: the latest signed decision is a rejection by {p.get('rejected_by')} "
            f"({p.get('reason')})"
        )
    if p.get("kind") == DECISION_KIND:
        if p.get("verdict") != "passed":
            return f"{what}: the signed verdict is {p.get('verdict')!r}, not 'passed'"
        if p.get("awaiting_approval"):
            return f"{what}: the signed verdict awaits a person's approval (no signed approval)"
    if not p.get("model_sha256"):
        return f"{what}: the signed record names no model files digest"
    return signed


def files_problem(signed: Signed, version: str, digest: str) -> str | None:
    """Why files with ``digest`` are not the ones the signed record vouches for."""
    expected = str(signed.payload.get("model_sha256"))
    if digest == expected:
        return None
    return (
        f"v{version}: the model files (sha256 {digest[:12]}) are not the signed ones "
        f"({expected[:12]}): the artifact was swapped after it was gated"
    )


def signature_problem(
    settings: Settings,
    name: str,
    version: str,
    run_id: str | None,
    tags: Mapping[str, str],
    model_dir: Path | str | None = None,
) -> str | None:
    """Why the signature does not allow serving ``version``, with the files in ``model_dir``
    (when given) checked against the signed digest; None when it does."""
    signed = verified_decision(settings, name, version, run_id, tags)
    if isinstance(signed, str):
        return signed
    if model_dir is None:
        return None
    return files_problem(signed, version, directory_sha256(model_dir))


def servable_problem(settings: Settings, client: MlflowClient, version: str) -> str | None:
    """The deployer's check: the tags' rule (:func:`.vetting.vetting_problem`), the signed
    decision, and the registered files' digest (downloaded as the service will)."""
    from mammo_pipeline.registry.vetting import vetting_problem

    name = settings.registered_model_name
    mv = client.get_model_version(name, str(version))
    tags = mv.tags or {}
    problem = vetting_problem(str(version), tags)
    if problem is None:
        signed = verified_decision(settings, name, str(version), mv.run_id, tags)
        if isinstance(signed, str):
            return signed
        try:
            digest = registered_files_sha256(settings, name, str(version))
        except Exception as exc:  # noqa: BLE001 - unreadable files are not served
            return f"v{version}: cannot read its model files: {type(exc).__name__}: {exc}"
        problem = files_problem(signed, str(version), digest)
    return problem
