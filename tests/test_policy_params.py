"""The Airflow side of the promotion policy, without Airflow running: trigger parameters may
only tighten the deployment's policy, an approval or rejection given in Airflow is recorded
under the Airflow user's name and cannot promote a version that no longer awaits approval, and
a manual deploy serves only vetted versions. The registry is a real MLflow (SQLite) store;
the task functions are the ones the DAGs call (the end-to-end runs are in
``tests/test_dags_e2e.py``)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from mammo_pipeline.config import get_settings
from mammo_pipeline.orchestration import params as P
from mammo_pipeline.orchestration import tasks

_MODEL_NUMBERS = itertools.count(1)


# ------------------------------------------------------------------ parameters
def test_policy_params_are_policy_fields_and_say_they_only_tighten():
    from mammo_pipeline.overrides import TRAINING_OVERRIDES
    from mammo_pipeline.registry.policy import STRICTER_WHEN_LARGER

    assert set(P.POLICY_PARAM_SCHEMAS) <= set(STRICTER_WHEN_LARGER)
    assert set(P.TRAINING_PARAM_SCHEMAS) <= TRAINING_OVERRIDES
    assert not set(P.POLICY_PARAM_SCHEMAS) & set(P.TRAINING_PARAM_SCHEMAS)
    assert P.RETRAIN_PARAM_SCHEMAS == {**P.TRAINING_PARAM_SCHEMAS, **P.POLICY_PARAM_SCHEMAS}
    for name, schema in P.POLICY_PARAM_SCHEMAS.items():
        text = schema["description"]
        assert "may only tighten the deployment's policy" in text, name
        assert f"(MAMMO_{name.upper()})" in text, name


def test_trigger_values_split_into_training_overrides_and_policy_requests():
    conf = {"epochs": 3, "min_recall": 0.9, "require_approval": None, "image_size": None}
    assert P.training_overrides(conf) == {"epochs": 3}
    assert P.policy_request(conf) == {"min_recall": 0.9}
    assert P.policy_request({"require_approval": False}) == {"require_approval": False}
    assert P.training_overrides(None) == {} and P.policy_request({}) == {}
    assert P.approval_assignees(()) is None
    assert P.approval_assignees((" alice ", "")) == [{"id": "alice", "name": "alice"}]


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow SQLite store for the module (creating its tables takes seconds); each test
    gets its own registered model in it."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.config import Settings

    root = tmp_path_factory.mktemp("registry")
    settings = Settings(
        data_dir=root / "data",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifact_location=str(root / "mlartifacts"),
    )
    mlflow_client(settings).search_experiments()
    return root


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch, registry_root: Path):
    """Settings of a deployment that requires recall >= 0.7 and a person's approval."""
    monkeypatch.setenv("MAMMO_DATA_DIR", str(registry_root / "data"))
    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", f"sqlite:///{registry_root / 'mlflow.db'}")
    monkeypatch.setenv("MAMMO_MLFLOW_ARTIFACT_LOCATION", str(registry_root / "mlartifacts"))
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", f"policy-model-{next(_MODEL_NUMBERS)}")
    monkeypatch.setenv("MAMMO_MIN_PRECISION", "0.3")
    monkeypatch.setenv("MAMMO_MIN_RECALL", "0.7")
    monkeypatch.setenv("MAMMO_REQUIRE_APPROVAL", "true")
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize(
    ("conf", "looser"),
    [
        ({"min_recall": 0.0, "epochs": 3}, "min_recall=0.0"),
        ({"min_precision": 0.1}, "min_precision=0.1"),
        ({"require_approval": False}, "require_approval=False"),
        ({"regression_tolerance": 0.5}, "regression_tolerance=0.5"),
    ],
)
def test_check_policy_refuses_a_looser_value(deployment, conf, looser, capsys):
    with pytest.raises(AirflowFailException) as err:
        tasks.check_policy(conf)
    message = str(err.value)
    assert f"{looser} would loosen the deployment's gate policy" in message
    assert "nothing was trained" in message and "\n" not in message
    assert "MAMMO_" in message
    assert looser in capsys.readouterr().out  # in the task log, on one line


def test_check_policy_accepts_a_tighter_value(deployment):
    out = tasks.check_policy({"min_recall": 0.9, "gate_lower_bound": True, "epochs": 2})
    assert out["policy"]["min_recall"] == 0.9 and out["policy"]["gate_lower_bound"] is True
    assert out["policy"]["min_precision"] == 0.3 and out["policy"]["require_approval"] is True
    assert out["requested"] == {"min_recall": 0.9, "gate_lower_bound": True}


# ------------------------------------------------------------------ the reviewer's answer
def test_review_record_keeps_who_when_and_why():
    at = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
    record = tasks.review_record(
        {
            "chosen_options": ["Approve"],
            "params_input": {"reason": "gate report reviewed"},
            "responded_at": at,
            "responded_by_user": {"id": "7", "name": "alice"},
        }
    )
    assert record["chosen"] == "Approve" and record["responded_at"] == at.isoformat()
    assert record["timed_out"] is False
    assert tasks.reviewer_identity(record) == "alice (Airflow user id 7)"
    same = {"responded_by_user": {"id": "alice", "name": "alice"}}
    assert tasks.reviewer_identity(same) == "alice"
    timeout = tasks.review_record(
        {"chosen_options": ["Reject"], "params_input": {"reason": ""}, "responded_at": at,
         "responded_by_user": None, "timedout": True}
    )  # fmt: skip
    assert timeout["chosen"] == "Reject" and timeout["timed_out"] is True
    assert tasks.reviewer_identity(timeout) is None


# ------------------------------------------------------------------ a real registry
def _version(settings, tags: dict[str, str], alias: str | None = None) -> str:
    """A registered version backed by a real (empty) MLflow run, with ``tags``."""
    from mammo_pipeline.common.mlflow_access import mlflow_client

    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name("policy-tests")
    exp_id = experiment.experiment_id if experiment else client.create_experiment("policy-tests")
    run = client.create_run(exp_id)
    client.set_terminated(run.info.run_id)
    name = settings.registered_model_name
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    for key, value in tags.items():
        client.set_model_version_tag(name, mv.version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def _state(settings, version: str) -> tuple[dict[str, str], dict[str, str]]:
    from mammo_pipeline.common.mlflow_access import mlflow_client

    client = mlflow_client(settings)
    name = settings.registered_model_name
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    return client.get_model_version(name, version).tags, aliases


def _review(choice: str, user: str | None, reason: str = "", timed_out: bool = False) -> dict:
    return {
        "chosen": choice,
        "chosen_options": [choice],
        "params_input": {"reason": reason},
        "responded_by_user": {"id": user, "name": user} if user else None,
        "responded_at": "2026-03-02T09:30:00+00:00",
        "timed_out": timed_out,
    }


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ({"gate": "failed", "gate_reasons": "test_recall too low"}, "no longer awaits approval"),
        ({"gate": "passed"}, "no longer awaits approval"),
        (
            {"gate": "passed", "awaiting_approval": "true", "review": "rejected",
             "review_by": "bob", "review_reason": "artefacts"},
            "was rejected by bob",
        ),
    ],
)  # fmt: skip
def test_an_airflow_approval_cannot_promote_a_version_no_longer_awaiting(deployment, tags, why):
    version = _version(deployment, tags, alias="challenger")
    decision = {"version": version, "passed": True, "awaiting_approval": True, "promotion": {}}
    with pytest.raises(AirflowFailException, match=why):
        tasks.promote_candidate(decision, _review("Approve", "alice", "looks fine"))
    after, aliases = _state(deployment, version)
    assert "champion" not in aliases
    assert after.get("review_by") == tags.get("review_by")  # nothing recorded for alice


def test_an_approval_needs_an_answer_and_a_named_user(deployment):
    version = _version(deployment, {"gate": "passed", "awaiting_approval": "true"}, "challenger")
    decision = {"version": version, "passed": True, "awaiting_approval": True, "promotion": {}}
    with pytest.raises(AirflowFailException, match="no approval of version"):
        tasks.promote_candidate(decision, None)
    with pytest.raises(AirflowFailException, match="names no Airflow user"):
        tasks.promote_candidate(decision, _review("Approve", None))
    assert "champion" not in _state(deployment, version)[1]


def test_a_reject_in_airflow_records_who_and_why(deployment):
    version = _version(deployment, {"gate": "passed", "awaiting_approval": "true"}, "challenger")
    decision = {"version": version, "passed": True, "awaiting_approval": True}
    out = tasks.record_rejection(decision, _review("Reject", "bob", "artefacts"))
    assert out["by"] == "bob" and out["reason"] == "artefacts"
    tags, aliases = _state(deployment, version)
    assert (tags["review"], tags["review_by"], tags["review_reason"]) == (
        "rejected",
        "bob",
        "artefacts",
    )
    assert "awaiting_approval" not in tags and "challenger" not in aliases


def test_a_timeout_is_recorded_as_a_rejection_by_nobody(deployment):
    version = _version(deployment, {"gate": "passed", "awaiting_approval": "true"}, "challenger")
    decision = {"version": version, "passed": True, "awaiting_approval": True}
    tasks.record_rejection(decision, _review("Reject", None, timed_out=True), timeout_hours=168)
    tags, _ = _state(deployment, version)
    assert tags["review"] == "rejected"
    assert tags["review_by"] == "nobody (approval timed out)"
    assert tags["review_reason"] == "no answer within 168 h: Reject is the default answer"


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"gate": "failed", "gate_reasons": "x"}, "refusing to deploy: v{v} is not vetted"),
        ({"gate": "pending"}, "refusing to deploy: v{v} is not vetted (gate=pending)"),
        ({"gate": "manual"}, "gate=manual without a recorded approval"),
        ({"gate": "passed", "review": "rejected", "review_by": "bob"}, "rejected by bob"),
    ],
)
def test_manual_deploy_refuses_an_unvetted_version(deployment, tags, message):
    version = _version(deployment, tags)
    conf = {"action": "deploy", "version": int(version), "reason": "try it"}
    with pytest.raises(AirflowFailException, match=re.escape(message.format(v=version))):
        tasks.prepare_manual_deploy(conf, triggered_by="carol", run_id="manual__1")
    tags_after, aliases = _state(deployment, version)
    assert "champion" not in aliases and tags_after.get("review_by") == tags.get("review_by")


def test_manual_deploy_of_a_vetted_version_needs_a_named_user(deployment):
    version = _version(deployment, {"gate": "passed"})
    conf = {"action": "deploy", "version": int(version), "reason": "audit"}
    with pytest.raises(AirflowFailException, match=f"mammo registry approve {version}"):
        tasks.prepare_manual_deploy(conf, triggered_by=None, run_id="scheduled__1")
    assert "champion" not in _state(deployment, version)[1]


def test_an_airflow_approval_promotes_a_waiting_version_under_the_approvers_name(deployment):
    tags = {"gate": "passed", "awaiting_approval": "true", "gate_champion_version": "none",
            "gate_baseline_version": "none"}  # fmt: skip
    version = _version(deployment, tags, alias="challenger")
    decision = {"version": version, "passed": True, "awaiting_approval": True, "promotion": {}}
    out = tasks.promote_candidate(decision, _review("Approve", "alice", "report reviewed"))
    assert out["approved_by"] == "alice"
    after, aliases = _state(deployment, version)
    assert aliases["champion"] == version and "challenger" not in aliases
    assert (after["review"], after["review_by"], after["review_reason"]) == (
        "approved",
        "alice",
        "report reviewed",
    )
    assert after["gate"] == "passed" and "awaiting_approval" not in after


def test_a_writer_records_what_a_read_only_serving_host_could_not(deployment):
    """Issue #22, item 1 (compose): the serving host's MLflow user may only read, so its
    deploy task leaves the records to ``record_deploy`` on a writer's queue: a live deploy is
    tagged ``deploy=live``; a failed one ``deploy=failed``, the champion moved back to the
    version that kept serving, and the run fails with the reason."""
    v1 = _version(deployment, {"gate": "passed"}, alias="previous")
    v2 = _version(deployment, {"gate": "passed", "replaced_champion": v1}, alias="champion")
    # the embedded deployer already recorded: nothing to do, nothing written
    assert tasks.record_deploy({"version": v2, "ok": True})["recorded_by"] == "the deployer"
    assert "deploy" not in _state(deployment, v2)[0]
    failed = {"version": v2, "ok": False, "record_pending": True, "restore_to": v1,
              "message": "smoke test: |diff| 0.4"}  # fmt: skip
    with pytest.raises(AirflowFailException, match=rf"deploy of version {v2} failed: smoke "
                       rf"test: \|diff\| 0.4; champion moved back to v{v1}"):  # fmt: skip
        tasks.record_deploy(failed)
    tags, aliases = _state(deployment, v2)
    assert tags["deploy"] == "failed" and "smoke test" in tags["deploy_reason"]
    assert aliases["champion"] == v1
    out = tasks.record_deploy({"version": v1, "ok": True, "record_pending": True})
    assert out["deploy"] == "live" and _state(deployment, v1)[0]["deploy"] == "live"
