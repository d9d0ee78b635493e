"""Evidence the gate checks itself, and signed evaluations and decisions (issue #18, scenarios
2 and 3), through the MLflow client on a real store (SQLite in tmp) with real Keras models:

* the 3-write evidence forgery (perfect scores in the predictions file, the digest tag set to
  match, consistent metrics logged) of a near-random model is refused, by the signed
  evaluation and by the gate's own re-scoring of the registered model;
* an honest version passes, its re-scoring recorded (seed, tiles, largest difference, cost);
* a hand-written ``gate=passed`` with ``champion`` moved by hand, an edited or copied signed
  decision and a swapped model artifact are refused by the deployer and by the service's
  loader, with the reason;
* several trusted keys (rotation), and ``mammo keys init``.
"""

from __future__ import annotations

import itertools
import json
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings

mlflow = pytest.importorskip("mlflow")

from mammo_pipeline import registry  # noqa: E402
from tests.evidence_helpers import fixed_labels, predictions, scores_for  # noqa: E402
from tests.signed_versions import evaluated_run, lookup_model, sign_as_gate  # noqa: E402

THRESHOLD = 0.5
_names = itertools.count()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("attest")
    mlflow_client(base(path)).search_experiments()  # create the store's tables once
    return path


def base(root: Path) -> Settings:
    return Settings(
        data_dir=root / "data",  # the embedded default's keys/ and the held-out test split
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "mlartifacts"),
        mlflow_experiment="mammo-attest",
        serve_side_port=0,
        auth="none",
    )


def fresh(root: Path, **kw) -> Settings:
    return base(root).model_copy(update={"registered_model_name": f"a{next(_names)}", **kw})


def version_of(s: Settings, signal: float = 3.0, **kw) -> str:
    labels = fixed_labels()
    run_id = evaluated_run(s, labels, scores_for(labels, signal), THRESHOLD,
                           tags={"synthetic": "true"}, **kw)  # fmt: skip
    return registry.register_run(s, run_id).version


def run_of(s: Settings, version: str) -> str:
    return mlflow_client(s).get_model_version(s.registered_model_name, version).run_id


def forge_evidence(s: Settings, version: str, scores: np.ndarray, tmp: Path) -> None:
    """The 3-write forgery: the predictions file replaced, its digest tag set to match, and
    metrics consistent with it logged, all through the MLflow client."""
    from mammo_pipeline.training.evaluate import binary_metrics

    client = mlflow_client(s)
    run_id = run_of(s, version)
    forged = predictions(fixed_labels(), scores)
    path = tmp / "test_predictions.csv"
    digest = forged.write(path)
    client.log_artifact(run_id, str(path), "evaluation")  # write 1
    client.set_tag(run_id, "test_predictions_sha256", digest)  # write 2
    for key, value in binary_metrics(forged.positive, forged.scores, THRESHOLD).items():
        client.log_metric(run_id, key, value)  # write 3 (one batch in spirit)


def evidence_reason(decision) -> str:
    check = next(c for c in decision.checks if c.name == "evidence_intact")
    assert not check.passed
    return check.reason or ""


# --- scenario 2: evidence the gate checks itself -------------------------------------------
def test_forged_evidence_of_a_near_random_model_is_refused(root, tmp_path):
    s = fresh(root)
    honest = version_of(s, 3.0)
    assert registry.gate_and_promote(s, honest)[0].passed
    near_random = version_of(s, 0.0)  # ROC AUC about 0.5
    labels = fixed_labels()
    forge_evidence(s, near_random, (labels > 0).astype(float), tmp_path)  # ROC AUC 1.000

    decision, result = registry.gate_and_promote(s, near_random)
    assert not decision.passed and result.verdict == "failed"
    reason = evidence_reason(decision)
    assert "replaced after evaluation" in reason  # not the predictions the evaluator signed
    assert "128 of 128 differ from the logged predictions by more than 0.0001" in reason, reason
    assert "largest |Δ|" in reason
    a = mlflow_client(s).get_registered_model(s.registered_model_name).aliases
    assert str(a["champion"]) == honest and str(a["baseline"]) == honest


def test_rescoring_alone_catches_signed_predictions_the_model_did_not_make(root, tmp_path):
    """Even predictions signed with a trusted key (a compromised evaluator) are re-scored: a
    third of the tiles changed is caught; with every tile re-scored, deterministically."""
    from mammo_pipeline.training.evaluate import Evaluation, binary_metrics, log_evaluation

    s = fresh(root, gate_rescore_tiles=10_000)  # more than the 600 tiles: all of them
    v = version_of(s, 1.0)
    run_id = run_of(s, v)
    labels = fixed_labels()
    scores = scores_for(labels, 1.0).copy()
    changed = np.arange(0, labels.size, 3)
    scores[changed] = (labels[changed] > 0).astype(float)  # the right answer on a third
    forged = predictions(labels, scores)
    path = tmp_path / "test_predictions.csv"
    digest = forged.write(path)
    info = mlflow_client(s).get_run(run_id).data.tags
    evaluation = Evaluation(
        metrics=binary_metrics(forged.positive, forged.scores, THRESHOLD),
        threshold=THRESHOLD,
        test_manifest_sha256=info["test_manifest_sha256"],
        artifacts=[path],
        predictions_sha256=digest,
    )
    log_evaluation(s, run_id, evaluation, info.get("model_id"))  # signed with the real key

    decision = registry.gate_version(s, v)
    reason = evidence_reason(decision)
    assert "replaced after evaluation" not in reason  # the signature itself verifies
    assert f"{changed.size} of 600 differ" in reason, reason


def test_honest_version_passes_and_the_rescoring_is_recorded(root, capsys):
    s = fresh(root)
    v = version_of(s, 3.0)
    started = time.perf_counter()
    decision, result = registry.gate_and_promote(s, v)
    gate_seconds = time.perf_counter() - started
    assert decision.passed and result.champion == v, decision.reasons
    evidence = decision.statistics["evidence"]
    rescore = evidence["rescore"]
    assert rescore["tiles"] == 128 and rescore["of"] == 600 and rescore["differing"] == 0
    assert rescore["max_abs_diff"] <= 1e-6 and rescore["seed"] > 0
    assert rescore["test_manifest_sha256"] == decision.test_manifest_sha256
    check = next(c for c in decision.checks if c.name == "evidence_intact")
    assert check.passed and "re-scored 128 of 600 held-out tiles" in (check.reason or "")
    signed = json.loads(registry.review_context(s, v).tags["signed_decision"])["payload"]
    assert signed["verdict"] == "passed"
    assert signed["evidence"]["rescore"]["seed"] == rescore["seed"]
    assert signed["model_sha256"] == evidence["model_sha256"]
    with capsys.disabled():
        print(
            f"\n[re-scoring cost] {rescore['tiles']} tiles of a 299 px lookup model: "
            f"{rescore['seconds']:.2f} s of a {gate_seconds:.2f} s gate-and-promote "
            f"(load {rescore['load_seconds']:.2f} s, scoring {rescore['score_seconds']:.2f} s)"
        )


def test_the_test_set_re_scored_must_be_the_one_evaluated_on(root):
    s = fresh(root)
    v = version_of(s, 3.0)
    from tests.signed_versions import write_onehot_split

    other = s.model_copy(update={"test_dir": root / "other-test"})
    labels = fixed_labels().copy()
    labels[0] = 0 if labels[0] else 4  # one label differs: another test set
    write_onehot_split(other.test_split, labels)
    decision = registry.gate_version(other, v)
    assert "is not the one v" in evidence_reason(decision)


# --- scenario 3: signed decisions, verified before serving ---------------------------------
def _refusals(s: Settings, version: str | None = None) -> tuple[str, str]:
    """(the service loader's refusal, the deployer's refusal) of ``version`` (the champion)."""
    from mammo_pipeline.errors import ConfigError
    from mammo_pipeline.serving import deploy
    from mammo_pipeline.serving.model_loader import load_served_model

    with pytest.raises(ConfigError, match="refusing to serve") as refused:
        load_served_model(s, version)
    result = deploy.deploy_version(s, version)
    assert not result.ok and result.backend_pid is None, result.to_dict()  # nothing started
    assert "refusing to deploy" in result.message
    return str(refused.value), result.message


def test_hand_written_gate_passed_and_a_moved_champion_are_not_served(root):
    s = fresh(root)
    run_id = evaluated_run(
        s, fixed_labels(), scores_for(fixed_labels(), 3.0), THRESHOLD, with_predictions=False
    )  # fmt: skip  never evaluated, never gated
    v = registry.register_run(s, run_id).version
    client = mlflow_client(s)
    client.set_model_version_tag(s.registered_model_name, v, "gate", "passed")
    client.set_registered_model_alias(s.registered_model_name, "champion", v)
    for said in _refusals(s):
        assert f"v{v}'s gate decision is not signed" in said, said


def test_an_edited_or_copied_decision_is_refused(root):
    s = fresh(root)
    v1 = version_of(s, 3.0)
    assert registry.gate_and_promote(s, v1)[0].passed
    v2 = version_of(s, 0.6)  # fails the gate: its signed verdict says so
    assert not registry.gate_and_promote(s, v2)[0].passed
    client = mlflow_client(s)
    name = s.registered_model_name
    record = json.loads(client.get_model_version(name, v2).tags["signed_decision"])
    assert record["payload"]["verdict"] == "failed"
    client.set_model_version_tag(name, v2, "gate", "passed")
    for said in _refusals(s, v2):
        assert "the signed verdict is 'failed'" in said, said

    record["payload"]["verdict"] = "passed"  # edit the signed record itself
    client.set_model_version_tag(name, v2, "signed_decision", json.dumps(record))
    for said in _refusals(s, v2):
        assert "does not match the record (edited after signing)" in said, said

    copied = client.get_model_version(name, v1).tags["signed_decision"]  # v1's valid record
    client.set_model_version_tag(name, v2, "signed_decision", copied)
    for said in _refusals(s, v2):
        assert "copied from another version" in said, said


def test_a_swapped_model_artifact_is_refused(root, tmp_path):
    s = fresh(root)
    v = version_of(s, 3.0)
    assert registry.gate_and_promote(s, v)[0].passed
    client = mlflow_client(s)
    mv = client.get_model_version(s.registered_model_name, v)
    other = tmp_path / "other"
    mlflow.keras.save_model(lookup_model(scores_for(fixed_labels(), 0.0)), str(other))
    model_id = mv.source.removeprefix("models:/")  # the LoggedModel the version points at
    client.log_model_artifacts(model_id, str(other))  # same paths, another model's files
    for said in _refusals(s, v):
        assert "are not the signed ones" in said and "swapped" in said, said
    decision = registry.gate_version(s, v)  # and a re-run of the gate refuses it too
    assert "not the files the signed evaluation scored" in evidence_reason(decision)


def test_several_trusted_keys_rotate(root, monkeypatch):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.registry.attestation import servable_problem

    keys = root / "rotation"
    for which in ("old", "new"):
        out = CliRunner().invoke(app, ["keys", "init", "--out", str(keys / which)])
        assert out.exit_code == 0, out.output
    pub = {w: keys / w / "mammo-signing.pub" for w in ("old", "new")}
    s = fresh(root)
    signers = {w: s.model_copy(update={"signing_key": keys / w / "mammo-signing.key"})
               for w in ("old", "new")}  # fmt: skip
    client = mlflow_client(s)
    versions = {}
    for which, signer in signers.items():
        v = version_of(s, 3.0)
        client.set_model_version_tag(s.registered_model_name, v, "gate", "passed")
        sign_as_gate(signer, v)
        versions[which] = v

    def problem(trusted: tuple[Path, ...], which: str) -> str | None:
        verifier = s.model_copy(update={"trusted_keys": trusted})  # the serving host: no key
        return servable_problem(verifier, client, versions[which])

    both = (pub["old"], pub["new"])
    assert problem(both, "old") is None and problem(both, "new") is None
    folder = keys / "trusted"
    folder.mkdir()
    for which in ("old", "new"):
        (folder / f"{which}.pub").write_bytes(pub[which].read_bytes())
    assert problem((folder,), "old") is None  # a folder of *.pub
    retired = problem((pub["new"],), "old")  # the old key dropped: what it signed is refused
    assert retired and "which is not trusted here" in retired, retired
    assert problem((pub["new"],), "new") is None


def test_keys_init_makes_a_private_key_only_its_owner_reads(tmp_path):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.common.signing import key_id, load_private_key, load_public_key

    out = CliRunner().invoke(app, ["keys", "init", "--out", str(tmp_path / "k")])
    assert out.exit_code == 0, out.output
    private, public = tmp_path / "k" / "mammo-signing.key", tmp_path / "k" / "mammo-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    kid = key_id(load_public_key(public))
    assert key_id(load_private_key(private).public_key()) == kid and f"key {kid}" in out.output
    again = CliRunner().invoke(app, ["keys", "init", "--out", str(tmp_path / "k")])
    assert again.exit_code != 0 and "--force" in str(again.exception)
    assert key_id(load_public_key(public)) == kid  # nothing replaced
