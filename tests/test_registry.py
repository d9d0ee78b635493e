"""Registry, gate, promotion and human review against a real MLflow store (SQLite in tmp).

One store per module (MLflow's migrations cost seconds per new database); every test works on
its own registered model name so that cases do not interfere.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

mlflow = pytest.importorskip("mlflow")

from mammo_pipeline import registry  # noqa: E402
from mammo_pipeline.registry.identity import Identity  # noqa: E402
from mammo_pipeline.registry.promotion import record_verdict  # noqa: E402
from mammo_pipeline.registry.report_html import render_html  # noqa: E402
from mammo_pipeline.registry.store import read_aliases  # noqa: E402
from tests.evidence_helpers import (  # noqa: E402
    fixed_labels,
    predictions,
    scores_for,
    sensitivity_walk,
)
from tests.signed_versions import evaluated_run  # noqa: E402

DATA_DIGEST = "d" * 64
THRESHOLD = 0.5
_names = itertools.count()


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid grey PNG without matplotlib or Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([128] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("mlflow")
    s = Settings(
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        mlflow_experiment="mammo-test",
        data_dir=root / "data",  # its keys/ sign evaluations and decisions (embedded default)
    )
    (root / "plots").mkdir()
    for name in ("confusion_matrix.png", "roc_pr_curves.png", "training_curves.png"):
        (root / "plots" / name).write_bytes(tiny_png())
    return s


def model_settings(store: Settings, **kw) -> Settings:
    """The shared store under a fresh registered model name, with its own held-out test
    folder (the gate re-scores on it; :func:`tests.signed_versions.ensure_test_split`)."""
    name = f"m{next(_names)}"
    return store.model_copy(
        update={"registered_model_name": name, "test_dir": store.data_dir / "tests" / name, **kw}
    )


def make_run(
    s: Settings,
    signal: float = 3.0,
    *,
    seed: int = 0,
    relog: dict | None = None,
    log_model: bool = True,
    with_predictions: bool = True,
    labelled_scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """A finished training run shaped like the train and evaluate stages' (a real Keras model
    whose held-out scores are ``scores_for(signal, seed)`` or ``labelled_scores``, evaluated
    and signed by the evaluation's code on the settings' test split, plots). ``relog`` logs
    other values over the metrics afterwards (a forged run)."""
    labels, scores = (
        labelled_scores
        if labelled_scores is not None
        else (fixed_labels(), scores_for(fixed_labels(), signal, seed))
    )
    root = Path(s.mlflow_tracking_uri.removeprefix("sqlite:///")).parent
    plots = root / "plots"
    return evaluated_run(
        s,
        labels,
        scores,
        THRESHOLD,
        tags={
            "data_manifest_sha256": DATA_DIGEST,
            "git_commit": "abc123",
            "weights_source": "none",
            "synthetic": "true",
        },
        metrics={"val_roc_auc": 0.91},
        artifacts=tuple(
            (png, "evaluation" if "training" not in png.name else None)
            for png in sorted(plots.iterdir())
        ),
        with_predictions=with_predictions,
        log_model=log_model,
        relog=relog,
    )


def new_version(s: Settings, signal: float = 3.0, **kw) -> str:
    return registry.register_run(
        s, make_run(s, signal, **kw), run_tags={"airflow_run_id": "af-1"}
    ).version


def client(s: Settings):
    return mlflow_client(s)


def all_aliases(s: Settings) -> dict[str, str]:
    return read_aliases(client(s), s.registered_model_name)


def aliases(s: Settings) -> dict[str, str]:
    """Aliases without ``baseline`` (checked on its own where it matters)."""
    return {k: v for k, v in all_aliases(s).items() if k != "baseline"}


def tags(s: Settings, version: str) -> dict[str, str]:
    return client(s).get_model_version(s.registered_model_name, version).tags


def champion_of(s: Settings, signal: float = 3.0, **kw) -> str:
    v = new_version(s, signal, **kw)
    decision, result = registry.gate_and_promote(s, v)
    assert decision.passed and result.champion == v, decision.reasons
    return v


# --------------------------------------------------------------------------------------------
# registration


def test_register_is_idempotent_and_uses_the_logged_model(store):
    s = model_settings(store)
    run_id = make_run(s)
    first = registry.register_run(s, run_id, run_tags={"airflow_run_id": "af-7"})
    again = registry.register_run(s, run_id)  # a retried Airflow task
    assert first.created and not again.created
    assert first.version == again.version == "1"
    assert first.source.startswith("models:/m-") and first.model_id
    found = client(s).search_model_versions(f"name = '{s.registered_model_name}'")
    assert len(found) == 1 and found[0].run_id == run_id
    t = tags(s, "1")
    assert t["gate"] == "pending"
    assert float(t["test_precision"]) > 0.3 and float(t["decision_threshold"]) == THRESHOLD
    assert t["data_manifest_sha256"] == DATA_DIGEST and t["git_commit"] == "abc123"
    assert t["airflow_run_id"] == "af-7"
    assert client(s).get_run(run_id).data.tags["registered_model_version"].endswith("/1")
    assert json.loads(json.dumps(first.to_dict()))["version"] == "1"


def test_register_refuses_runs_without_a_model(store):
    s = model_settings(store)
    with pytest.raises(MammoError, match="no logged model named 'model'"):
        registry.register_run(s, make_run(s, log_model=False))
    with pytest.raises(MammoError, match="not found"):
        registry.register_run(s, "0" * 32)


# --------------------------------------------------------------------------------------------
# the gate on real runs


@pytest.mark.parametrize(
    ("signal", "champion_signal", "passed", "reason"),
    [
        pytest.param(3.0, None, True, "", id="no_champion_yet"),
        pytest.param(3.0, 3.0, True, "", id="same_as_champion"),
        pytest.param(3.6, 3.0, True, "", id="beats_champion"),
        pytest.param(0.6, None, False, "below the threshold", id="thresholds"),
        pytest.param(1.6, 3.0, False, "could be worse than champion v1", id="worse_than_champion"),
    ],
)
def test_gate_case(store, signal, champion_signal, passed, reason):
    s = model_settings(store)
    champ_v = champion_of(s, champion_signal) if champion_signal is not None else None
    v = new_version(s, signal)

    decision = registry.gate_version(s, v)
    assert decision.passed is passed, decision.reasons
    assert decision.champion_version == champ_v
    if reason:
        assert any(reason in r for r in decision.reasons), decision.reasons
    json.dumps(decision.to_dict(), allow_nan=False)

    result = record_verdict(s, v, decision)
    a, t = aliases(s), tags(s, v)
    assert t["gate"] == ("passed" if passed else "failed")
    assert (reason in t["gate_reasons"]) if reason else t["gate_reasons"] == "all checks passed"
    assert t["data_manifest_sha256"] == DATA_DIGEST and t["git_commit"] == "abc123"
    assert t["airflow_run_id"] == "af-1" and float(t["decision_threshold"]) == THRESHOLD
    assert [c["name"] for c in json.loads(t["gate_checks"])] == [c.name for c in decision.checks]
    assert t["gate_test_n"] == "600" and t["gate_test_positives"] == "90"
    assert "(n=90)" in t["gate_recall_ci"]
    assert json.loads(t["gate_policy"])["min_recall"] == s.min_recall
    if champ_v:
        assert t["gate_vs_champion"].startswith(f"v{champ_v}: \u0394ROC AUC")
    if passed:
        assert a.get("champion") == v and "challenger" not in a
        assert a.get("previous") == champ_v  # None when there was no champion
        assert result.aliases_set.get("champion") == v
    else:
        assert a.get("challenger") == v
        assert a.get("champion") == champ_v and "previous" not in a
    run_id = decision.run_id
    files = {f.path for f in client(s).list_artifacts(run_id, "review")}
    assert {f"review/version-{v}.html", f"review/gate_decision-{v}.json"} <= files
    assert client(s).get_run(run_id).data.tags["gate"] == t["gate"]


def test_first_champion_becomes_the_baseline_and_better_ones_move_it(store):
    s = model_settings(store)
    v1 = champion_of(s, 3.0)
    assert all_aliases(s)["baseline"] == v1
    champion_of(s, 3.0, seed=0)  # equal: baseline stays
    assert all_aliases(s)["baseline"] == v1
    v3 = champion_of(s, 3.6)  # better: the baseline is the best that ever passed
    assert all_aliases(s)["baseline"] == v3


def test_walk_down_is_refused(store):
    """Seven candidates, each a little worse than the last (within the tolerance of the
    current champion): the old gate promoted all seven; the baseline stops the walk early,
    so the loss against the first champion stays within the tolerance."""
    from mammo_pipeline.stats import roc_auc

    s = model_settings(store)
    labels = fixed_labels()
    first = champion_of(s, 2.2)
    signals = [round(2.2 - 0.1 * k, 2) for k in range(1, 8)]
    promoted = [first]
    for sig in signals:
        v = new_version(s, sig)
        decision, result = registry.gate_and_promote(s, v)
        if result.champion == v:
            promoted.append(v)
    auc = {sig: roc_auc(labels > 0, scores_for(labels, sig)) for sig in [2.2, *signals]}
    steps = [auc[a] - auc[b] for a, b in zip([2.2, *signals], signals, strict=False)]
    assert max(steps) < s.regression_tolerance  # each step alone is within the tolerance
    assert auc[2.2] - auc[signals[-1]] > 3 * s.regression_tolerance  # the walk is not
    assert len(promoted) <= 3, promoted  # refused by the second step at the latest
    final = signals[len(promoted) - 2] if len(promoted) > 1 else 2.2
    assert auc[2.2] - auc[final] <= s.regression_tolerance
    refused = tags(s, str(int(promoted[-1]) + 1))
    assert refused["gate"] == "failed" and "could be worse than" in refused["gate_reasons"]
    assert all(tags(s, str(v))["gate"] == "failed" for v in range(len(promoted) + 1, 9))


def test_sensitivity_walk_down_is_refused_by_the_second_step(store):
    """Issue #18, scenario 1: versions each a little better on ROC AUC but 0.010 worse in
    sensitivity at the same specificity. The old baseline followed every champion with a
    higher ROC AUC, so every step passed (the loss grew 0.010 per step unseen); now the
    baseline stays on v1 (the new champion is worse on a gated metric), and the second step
    is refused against it. The champion's loss against v1 stays within one tolerance."""
    from mammo_pipeline.stats import compare_paired

    s = model_settings(store)
    labels, walk = sensitivity_walk(3, THRESHOLD)
    versions = []
    for scores in walk:
        v = new_version(s, labelled_scores=(labels, scores))
        registry.gate_and_promote(s, v)
        versions.append(v)
    v1, v2, v3, v4 = versions
    t2 = tags(s, v2)
    assert t2["gate"] == "passed" and all_aliases(s)["baseline"] == v1
    assert json.loads(t2["gate_deltas_vs_baseline"])["sensitivity_at_specificity"] < 0
    assert json.loads(t2["gate_deltas_vs_baseline"])["roc_auc"] > 0
    t3 = tags(s, v3)
    assert t3["gate"] == "failed", t3["gate_reasons"]
    assert "baseline v1" in t3["gate_reasons"] and "sensitivity" in t3["gate_reasons"]
    assert tags(s, v4)["gate"] == "failed" and aliases(s)["champion"] == v2
    loss = compare_paired(labels > 0, walk[1], walk[0], reference_threshold=THRESHOLD,
                          n_resamples=1000, seed=0)  # fmt: skip
    for metric in ("roc_auc", "pr_auc", "sensitivity_at_specificity"):
        assert getattr(loss, metric).delta >= -s.regression_tolerance


def test_relogged_metric_is_caught(store):
    s = model_settings(store)
    v = new_version(s, 0.6, relog={"test_precision": 0.95, "test_recall": 0.95})
    decision = registry.gate_version(s, v)
    assert not decision.passed
    assert any("disagrees" in r for r in decision.reasons), decision.reasons


def test_replaced_predictions_artifact_is_caught(store, tmp_path):
    s = model_settings(store)
    v = new_version(s)
    run_id = client(s).get_model_version(s.registered_model_name, v).run_id
    better = predictions(fixed_labels(), scores_for(fixed_labels(), 9.0))
    path = tmp_path / "test_predictions.csv"
    better.write(path)
    client(s).log_artifact(run_id, str(path), "evaluation")
    decision = registry.gate_version(s, v)
    assert not decision.passed
    assert any("does not match the digest" in r for r in decision.reasons), decision.reasons


def test_run_without_predictions_fails_closed(store):
    s = model_settings(store)
    v = new_version(s, with_predictions=False)
    decision = registry.gate_version(s, v)
    assert not decision.passed and "mammo evaluate --run-id" in decision.reasons[0]


def test_policy_can_only_be_tightened(store):
    from mammo_pipeline.errors import ConfigError

    s = model_settings(store)
    v = new_version(s)
    with pytest.raises(ConfigError, match="would loosen the deployment's gate policy"):
        registry.gate_version(s, v, requested={"min_recall": 0.1})
    d = registry.gate_version(s, v, requested={"min_recall": 0.99})
    assert not d.passed and d.policy["min_recall"] == 0.99


def test_review_report_shows_decision_statistics_and_plots(store, tmp_path):
    s = model_settings(store)
    champion_of(s)
    v = new_version(s, 1.6)
    registry.gate_and_promote(s, v)
    run_id = client(s).get_model_version(s.registered_model_name, v).run_id
    local = client(s).download_artifacts(run_id, f"review/version-{v}.html", str(tmp_path))
    page = Path(local).read_text()
    assert "gate: FAILED" in page and "SYNTHETIC DATA" in page
    assert "could be worse than champion v1" in page
    assert "test set: 600 tiles, 90 positive (SYNTHETIC data)" in page
    assert "vs champion v1 (paired, same tiles, 1000 bootstrap resamples, 95% intervals)" in page
    assert page.count("data:image/png;base64,") == 3
    assert "<td class='FAIL'>FAIL</td>" in page and "<td class='PASS'>PASS</td>" in page
    decision = json.loads(
        Path(
            client(s).download_artifacts(run_id, f"review/gate_decision-{v}.json", str(tmp_path))
        ).read_text()
    )
    assert decision["passed"] is False and decision["champion_version"] == "1"
    assert decision["statistics"]["vs_champion"]["n"] == 600


# --------------------------------------------------------------------------------------------
# promotion guards


def test_forged_or_stale_pass_is_applied_as_fail(store):
    s = model_settings(store)
    champion_of(s)
    v = new_version(s, 0.6)
    d = registry.gate_version(s, v)
    forged = dataclasses.replace(d, passed=True, reasons=[])
    r = record_verdict(s, v, forged)
    assert r.verdict == "failed" and aliases(s)["champion"] == "1"
    assert "checks do not support it" in tags(s, v)["gate_reasons"]

    good = new_version(s)
    decision = registry.gate_version(s, good)
    champion_of(s, 3.6)  # v4 becomes champion meanwhile
    r = record_verdict(s, good, decision)
    assert r.verdict == "failed" and "champion changed since the gate ran" in r.reasons[-1]
    assert aliases(s)["champion"] == "4" and aliases(s)["challenger"] == good


def test_require_approval_parks_a_passing_version_as_challenger(store):
    s = model_settings(store, require_approval=True)
    v = new_version(s)
    decision, result = registry.gate_and_promote(s, v)
    assert decision.passed and result.awaiting_approval
    assert aliases(s) == {"challenger": v}
    assert tags(s, v)["gate"] == "passed" and tags(s, v)["awaiting_approval"] == "true"
    registry.approve(s, v, "looked at the curves", who=Identity("carol", "airflow"))
    assert all_aliases(s) == {"champion": v, "baseline": v}
    t = tags(s, v)
    assert "awaiting_approval" not in t and t["gate"] == "passed" and t["review_by"] == "carol"


def test_late_approval_after_a_champion_change_re_gates(store):
    s = model_settings(store, require_approval=True)
    v1 = new_version(s, 3.0)
    registry.gate_and_promote(s, v1)
    registry.approve(s, v1, "first model", who=Identity("carol", "airflow"))
    v2 = new_version(s, 3.0, seed=0)  # passes against v1, waits for approval
    assert registry.gate_and_promote(s, v2)[1].awaiting_approval
    v3 = new_version(s, 4.5)  # a much better model is approved meanwhile
    registry.gate_and_promote(s, v3)
    registry.approve(s, v3, "clearly better", who=Identity("carol", "airflow"))
    r = registry.approve(s, v2, "approved a week later", who=Identity("dan", "airflow"))
    assert "re-gated, failed" in r.message, r.message
    assert aliases(s)["champion"] == v3 and tags(s, v2)["gate"] == "failed"
    assert tags(s, v2)["review_by"] == "dan"


def test_rejected_version_needs_an_explicit_override(store):
    s = model_settings(store)
    champion_of(s)
    v2 = new_version(s, 1.6)
    registry.gate_and_promote(s, v2)
    registry.reject(s, v2, "misses small calcifications", who=Identity("dora", "airflow"))
    with pytest.raises(MammoError, match="--override-rejection"):
        registry.approve(s, v2, "changed my mind", who=Identity("erin", "airflow"))
    erin = Identity("erin", "airflow")
    with pytest.raises(MammoError, match="--override-gate"):  # it failed the gate, too
        registry.approve(s, v2, "second reader agreed", who=erin, override_rejection=True)
    r = registry.approve(s, v2, "second reader agreed", who=erin, override_rejection=True,
                         override_gate=True)  # fmt: skip
    t = tags(s, v2)
    assert r.champion_after == v2 and t["gate"] == "manual" and t["gate_override"] == "true"
    assert t["gate_override_by"] == "erin" and t["review_by_source"] == "airflow"
    assert all_aliases(s)["baseline"] != v2  # an override never moves the baseline


def test_rejection_is_signed_and_an_edited_record_is_detected(store):
    """A rejection is signed like an approval (issue #18 item 3): its review tags edited by
    hand, or removed with the passed gate decision written back, are caught by
    ``VersionState(verify=True)``, the listing, the deployer's check and the gate."""
    from mammo_pipeline.registry.attestation import servable_problem
    from mammo_pipeline.registry.state import version_state

    s = model_settings(store)
    name, c = s.registered_model_name, client(s)
    champion_of(s)
    v2 = champion_of(s, 3.2)
    registry.rollback(s, reason="a site reported artefacts", who=Identity("dora", "airflow"))
    passed_decision = tags(s, v2)["signed_decision"]
    assert servable_problem(s, c, v2) is None  # vetted, served until the rollback

    registry.reject(s, v2, "misses small calcifications", who=Identity("dora", "airflow"))
    t = tags(s, v2)
    assert t["signed_review"] == t["signed_decision"] and t["review"] == "rejected"
    state = version_state(s, c, v2, verify=True)
    assert state.rejected and state.signature_checked and state.signature_problem is None

    c.set_model_version_tag(name, v2, "review_reason", "minor: fine to serve")  # by hand
    state = version_state(s, c, v2, verify=True)
    edited = "review_reason='minor: fine to serve' is signed as 'misses small calcifications'"
    assert edited in (state.signature_problem or ""), state.signature_problem
    assert not state.vetted and edited in (state.vetting_problem() or "")
    (row,) = (r for r in registry.list_versions(s) if r.version == v2)
    assert not row.vetted and edited in (row.not_vetted_because or "")

    # the rejection deleted by hand and the earlier passed decision written back
    for key in ("review", "review_by", "review_by_source", "review_at", "review_reason"):
        c.delete_model_version_tag(name, v2, key)
    c.set_model_version_tag(name, v2, "signed_decision", passed_decision)
    state = version_state(s, c, v2, verify=True)
    assert not state.rejected and not state.vetted  # the tags alone would serve it
    assert "was rejected by dora" in (state.signature_problem or ""), state.signature_problem
    assert "was rejected by dora" in (servable_problem(s, c, v2) or "")
    with pytest.raises(MammoError, match="--override-rejection"):
        registry.approve(s, v2, "looks fine", who=Identity("erin", "airflow"))
    decision, _ = registry.gate_and_promote(s, v2)
    assert any("rejected by dora (signed)" in r for r in decision.reasons), decision.reasons

    # a rejection written by hand is reported as unsigned
    v3 = new_version(s)
    c.set_model_version_tag(name, v3, "review", "rejected")
    state = version_state(s, c, v3, verify=True)
    assert "v" + v3 + "'s rejection is not signed" in (state.signature_problem or "")

    # a signed approval lifts the signed rejection
    r = registry.approve(s, v2, "second reader agreed", who=Identity("erin", "airflow"),
                         override_rejection=True, override_gate=True)  # fmt: skip
    assert r.champion_after == v2 and "signed_review" not in tags(s, v2)
    assert version_state(s, c, v2, verify=True).vetted


@pytest.mark.slow
def test_concurrent_gates_serialise(store):
    """Two gates at once (v2 better than v3, both better than v1): the outcome equals one of
    the serial orders; before the lock, v3 could end as champion with v2's promotion lost."""
    import threading

    def outcome(order: tuple[str, str] | None) -> tuple:
        s = model_settings(store)
        champion_of(s, 2.6)
        v = {"a": new_version(s, 3.6), "b": new_version(s, 3.1)}
        if order is None:
            threads = [threading.Thread(target=registry.gate_and_promote, args=(s, v[k]))
                       for k in ("a", "b")]  # fmt: skip
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        else:
            for k in order:
                registry.gate_and_promote(s, v[k])
        a = aliases(s)
        return tuple(sorted(a.items())), tags(s, v["a"])["gate"], tags(s, v["b"])["gate"]

    serial = {outcome(("a", "b")), outcome(("b", "a"))}
    for _ in range(2):
        assert outcome(None) in serial


def test_registry_lock_on_postgresql_serialises():
    import threading
    import time as _time

    pytest.importorskip("psycopg2")
    from mammo_pipeline.registry.lock import registry_lock

    s = Settings(registry_lock_uri="postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        with registry_lock(s):
            pass
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL here: {exc}")
    inside: list[int] = []
    overlap: list[bool] = []

    def hold(i: int) -> None:
        with registry_lock(s):
            overlap.append(bool(inside))
            inside.append(i)
            _time.sleep(0.2)
            inside.remove(i)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert overlap == [False, False, False]


def test_gate_of_unknown_version_cannot_run(store):
    s = model_settings(store)
    with pytest.raises(MammoError, match="has no version 9"):
        registry.gate_version(s, 9)


# --------------------------------------------------------------------------------------------
# human review


def test_approve_reject_rollback(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = new_version(s, 0.6)
    assert not registry.gate_and_promote(s, v2)[0].passed
    assert aliases(s) == {"champion": v1, "challenger": v2}

    with pytest.raises(MammoError, match="needs a reason"):
        registry.approve(s, v2, "  ")
    alice = Identity("alice", "airflow")
    r = registry.approve(s, v2, "recall fine on the 2025 audit set", who=alice, override_gate=True)
    assert (r.champion_before, r.champion_after, r.previous_after) == (v1, v2, v1)
    assert aliases(s) == {"champion": v2, "previous": v1}
    t = tags(s, v2)
    assert t["gate"] == "manual" and t["gate_auto"] == "failed"
    assert t["review"] == "approved" and t["review_by"] == "alice"
    assert t["review_reason"] == "recall fine on the 2025 audit set" and t["review_at"]
    assert "below the threshold" in t["gate_reasons_auto"]
    assert not registry.approve(s, v2, "again", who=alice).changed

    with pytest.raises(MammoError, match="is the champion"):
        registry.reject(s, v2, "no")

    r = registry.rollback(s, "deploy smoke test failed", who=Identity("bob", "airflow"))
    assert (r.champion_before, r.champion_after, r.previous_after) == (v2, v1, None)
    assert aliases(s) == {"champion": v1}
    assert tags(s, v2)["review"] == "rolled_back" and tags(s, v2)["review_by"] == "bob"
    assert tags(s, v1)["reinstated_reason"] == "deploy smoke test failed"
    with pytest.raises(MammoError, match="no 'previous' version"):
        registry.rollback(s)

    r = registry.reject(s, v2, "too many false negatives", who=Identity("dora", "airflow"))
    assert tags(s, v2)["review"] == "rejected" and r.champion_after == v1
    d = registry.gate_version(s, v2)
    assert not d.passed and "rejected by dora" in d.reasons[-1]  # a person said no

    # Every manual action stays on record, and the report shows who, when, why.
    history = json.loads(tags(s, v2)["review_history"])
    assert [(h["action"], h["by"]) for h in history] == [
        ("approved", "alice"),
        ("rolled_back", "bob"),
        ("rejected", "dora"),
    ]
    ctx = registry.review_context(s, v2)
    assert ctx.tags["review_by"] == "dora" and ctx.decision is not None
    page = render_html(ctx)
    assert "review: REJECTED" in page and "too many false negatives" in page
    assert "recall fine on the 2025 audit set" in page and "Why the automatic gate failed" in page


def test_rollback_walks_back_the_champion_history(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = champion_of(s, 3.2)
    v3 = champion_of(s, 3.4)
    assert aliases(s) == {"champion": v3, "previous": v2}
    assert registry.rollback(s).champion_after == v2
    assert aliases(s) == {"champion": v2, "previous": v1}
    assert registry.rollback(s).champion_after == v1
    assert aliases(s) == {"champion": v1}


def test_rollback_without_champion(store):
    with pytest.raises(MammoError, match="no champion"):
        registry.rollback(model_settings(store))


def test_list_and_show(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = new_version(s, 0.6)
    registry.gate_and_promote(s, v2)
    rows = registry.list_versions(s)
    assert [(r.version, r.aliases, r.gate) for r in rows] == [
        (v2, ["challenger"], "failed"),
        (v1, ["baseline", "champion"], "passed"),
    ]
    assert rows[0].metrics["test_precision"] < 0.3
    ctx = registry.review_context(s, v2)
    assert ctx.champion_version == v1 and ctx.champion_metrics["test_precision"] > 0.3
    assert any(k.endswith("confusion_matrix.png") for k in ctx.links)
    assert f"review/version-{v2}.html" in ctx.links


# --------------------------------------------------------------------------------------------
# the command line


def _mammo(s: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    env.update(
        MAMMO_MLFLOW_TRACKING_URI=s.mlflow_tracking_uri,
        MAMMO_MLFLOW_ARTIFACT_LOCATION=s.mlflow_artifact_location,
        MAMMO_REGISTERED_MODEL_NAME=s.registered_model_name,
        **extra,
        MAMMO_DATA_DIR=str(s.data_dir),  # its signing key and the test split the gate re-scores
        MAMMO_TEST_DIR=str(s.test_split),
    )
    return subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", "registry", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _mammo_in_process(s: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """Cheaper than a subprocess (MLflow's import and SQLite start cost ~3 s per process)."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    monkeypatch.setenv("MAMMO_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("MAMMO_TEST_DIR", str(s.test_split))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["registry", *args])
    get_settings.cache_clear()
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _cli(s: Settings, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str):
    """``mammo *args`` in process (a CliRunner result, whatever its exit code)."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    for key, value in {
        "MAMMO_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "MAMMO_MLFLOW_ARTIFACT_LOCATION": s.mlflow_artifact_location,
        "MAMMO_REGISTERED_MODEL_NAME": s.registered_model_name,
        "MAMMO_DATA_DIR": str(s.data_dir),
        "MAMMO_TEST_DIR": str(s.test_split),
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()


def test_cli_version_awaiting_approval_is_not_vetted_and_not_deployed(store, monkeypatch):
    """Issue #18 scenario 4 through the CLI: a version that passed the gate with
    MAMMO_REQUIRE_APPROVAL=true is listed and shown as not vetted, and `mammo deploy
    --version V` refuses it with the reason (before: vetting never read awaiting_approval)."""
    s = model_settings(store)
    v = new_version(s)
    env = {"MAMMO_REQUIRE_APPROVAL": "true", "MAMMO_AUTH": "none"}
    out = _cli(s, monkeypatch, "registry", "gate", "--version", v, **env)
    assert out.exit_code == 0, (out.output, out.exception)
    assert tags(s, v)["gate"] == "passed" and tags(s, v)["awaiting_approval"] == "true"
    awaits = "passed the gate but awaits a person's approval"

    out = _cli(s, monkeypatch, "registry", "list", **env)
    row = next(ln for ln in out.output.splitlines() if ln.split()[:1] == [v])
    assert re.search(r"passed, awaiting approval\s+no\s", row), out.output
    out = _cli(s, monkeypatch, "registry", "list", "--json", **env)
    (listed,) = json.loads(out.output)["versions"]
    assert listed["vetted"] is False and awaits in listed["not_vetted_because"], listed
    out = _cli(s, monkeypatch, "registry", "show", v, **env)
    assert f"vetted: no: v{v} {awaits}" in " ".join(out.output.split()), out.output
    out = _cli(s, monkeypatch, "status", **env)
    assert f"awaiting approval: v{v} (gate passed, awaiting approval, NOT vetted)" in out.output

    out = _cli(s, monkeypatch, "deploy", "--version", v, **env)
    said = out.output + str(out.exception or "")
    assert out.exit_code != 0 and "refusing to deploy" in said and awaits in said, said
    assert "champion" not in all_aliases(s) and "deploy" not in tags(s, v)


@pytest.mark.slow
def test_cli_gate_list_approve_rollback(store, monkeypatch, capsys):
    s = model_settings(store)
    run_id = make_run(s)
    # A fresh process registers a LoggedModel (MLflow resolves models:/ via the global URI).
    out = _mammo(s, "register", "--run-id", run_id, "--airflow-run-id", "af-9")
    assert out.returncode == 0, out.stderr
    assert f"run {run_id} registered as {s.registered_model_name} version 1" in out.stdout
    again = _mammo_in_process(s, monkeypatch, "register", "--run-id", run_id, "--json")
    assert json.loads(again)["created"] is False and json.loads(again)["version"] == "1"
    v1 = "1"
    v2 = new_version(s, 1.6)

    out = _mammo(s, "gate", "--version", v1)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(re.match(r"PASS\s+min_precision\s+0\.\d+\s+>=\s+0\.3000", ln) for ln in lines)
    assert any(re.match(r"PASS\s+evidence_intact", ln) for ln in lines), out.stdout
    assert "test set: 600 tiles, 90 positive (SYNTHETIC data)" in out.stdout
    assert "verdict: PASSED" in out.stdout and "champion -> v1" in out.stdout

    out = _mammo(s, "gate", "--version", v2, "--strict")
    assert out.returncode == 2, out.stderr
    lines = out.stdout.splitlines()
    assert any(re.match(r"FAIL\s+not_worse_than_champion:roc_auc", ln) for ln in lines)
    assert "vs champion v1 (paired, same tiles" in out.stdout and "\u0394ROC AUC" in out.stdout
    assert "verdict: FAILED" in out.stdout and "challenger -> v2" in out.stdout
    assert "Traceback" not in out.stderr and "Downloading" not in out.stderr

    out = _mammo(s, "gate", "--version", v2, "--min-recall", "0.1")
    assert out.returncode == 1 and "would loosen the deployment's gate policy" in out.stderr

    out = _mammo(s, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:5] == ["version", "aliases", "gate", "vetted", "review"]
    assert lines[3].split()[:4] == ["2", "challenger", "failed", "no"]
    assert lines[4].split()[:4] == ["1", "baseline,champion", "passed", "yes"]

    # Issue #18, scenario 5: a free-text name is not an identity; a failed gate is not
    # approved by accident; MAMMO_APPROVERS is a plain name and is enforced on the CLI.
    me = getpass.getuser()
    out = _mammo(s, "approve", v2, "--reason", "r", "--who", "chief-radiologist")
    assert out.returncode == 2 and "--who" in out.stderr, out.stderr
    out = _mammo(s, "approve", v2, "--reason", "precision ok for screening")
    assert out.returncode == 1 and "--override-gate" in out.stderr, out.stderr
    out = _mammo(s, "approve", v2, "--reason", "ok", "--override-gate", MAMMO_APPROVERS="alice")
    assert out.returncode == 1, out.stderr
    assert f"{me} (os user) may not approve a version" in out.stderr and "alice" in out.stderr
    assert _mammo(s, "list", MAMMO_APPROVERS="alice").returncode == 0  # no pydantic crash
    out = _mammo(s, "approve", v2, "--reason", "precision ok for screening", "--override-gate",
                 MAMMO_APPROVERS=f"alice,{me}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "v2 is now the champion" in out.stdout and f"by {me}" in out.stdout
    t = tags(s, v2)
    assert t["review_by"] == me and t["review_by_source"] == "os"
    assert t["gate_override"] == "true" and t["gate_override_by"] == me
    listed = _mammo(s, "list").stdout
    assert "OVERRIDE of gate=failed" in listed and f"approved by {me} (os user)" in listed

    shown = _mammo_in_process(s, monkeypatch, "show", v2)
    assert "gate: manual" in shown and "review: approved" in shown
    assert "champion: this version" in shown  # v2 is the champion (was "none")
    assert "evaluation/confusion_matrix.png: file://" in shown
    assert "evaluation/roc_pr_curves.png: file://" in shown and "training_curves.png" in shown
    shown = _mammo_in_process(s, monkeypatch, "show", "1")
    assert "statistics of the last gate" in shown and "test set: 600 tiles" in shown

    out = _mammo(s, "rollback", "--reason", "smoke test", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["champion_after"] == "1"

    # Could not run -> exit 1 with a one-line error (main() in-process: a subprocess costs ~3 s).
    from mammo_pipeline.cli.main import main
    from mammo_pipeline.config import get_settings

    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    monkeypatch.setattr(sys, "argv", ["mammo", "registry", "rollback"])
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "no 'previous' version" in err
    assert "Traceback" not in err
