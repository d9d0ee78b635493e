"""kill -9 after every single registry write of a promotion, a manual approval and a rollback.

Each case starts from a fresh registered model (versions 1, 2, 3 of the same three runs,
registered once per module) in a known state, runs the action in a forked child armed with
``MAMMO_FAULT_KILL_AFTER_WRITE=k`` (:mod:`mammo_pipeline.registry.faults`: SIGKILL right after
the k-th write), then checks:

* what readers that take no lock can see meanwhile: ``champion`` is the old or the new one and
  always a vetted version; without a journal pending, the whole state is the one before or the
  one after the action (a state some serial order produces);
* the next registry command (the registry lock completes a journaled action) leaves exactly the
  state of the action run to its end, or, killed before its journal was armed, of the action
  never run; nothing of the journal remains.

Compared: every alias and every tag of the three versions; times (``*_at``, ``*_since``) only
as present or absent, since the action and its reference run at different moments.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from tests.faults.conftest import wait_child

mlflow = pytest.importorskip("mlflow")

from mammo_pipeline import registry  # noqa: E402
from mammo_pipeline.registry import faults, journal  # noqa: E402
from mammo_pipeline.registry.identity import Identity  # noqa: E402
from mammo_pipeline.registry.promotion import record_verdict  # noqa: E402
from mammo_pipeline.registry.store import read_aliases  # noqa: E402
from mammo_pipeline.registry.vetting import vetting_problem  # noqa: E402
from tests.test_registry import make_run, tiny_png  # noqa: E402

pytestmark = pytest.mark.faults

VERSIONS = ("1", "2", "3")
SIGNALS = (3.0, 3.2, 3.6)  # v3 beats v2 (the champion and baseline of the gate case)
_names = itertools.count()

#: Setup of each case: tags by version, then aliases (versions 1-3 of runs SIGNALS).
PASSED = {"gate": "passed", "gate_reasons": "all checks passed"}
STATES: dict[str, tuple[dict[str, dict[str, str]], dict[str, str]]] = {
    # v3 passed earlier and was parked for approval; approval is no longer required: re-gated,
    # it moves champion, previous, challenger and baseline at once.
    "gate": (
        {
            "1": PASSED,
            "2": {**PASSED, "replaced_champion": "1"},
            "3": {**PASSED, "awaiting_approval": "true"},
        },
        {"champion": "2", "previous": "1", "baseline": "2", "challenger": "3"},
    ),
    # v3 failed the gate; a person approves it (gate=manual).
    "approve": (
        {
            "1": PASSED,
            "2": {**PASSED, "replaced_champion": "1"},
            "3": {"gate": "failed", "gate_reasons": "recall below the threshold"},
        },
        {"champion": "2", "previous": "1", "baseline": "2", "challenger": "3"},
    ),
    # champion v3 (replaced v2, which replaced v1): back to v2, previous walks back to v1.
    "rollback": (
        {
            "1": PASSED,
            "2": {**PASSED, "replaced_champion": "1"},
            "3": {**PASSED, "replaced_champion": "2"},
        },
        {"champion": "3", "previous": "2", "baseline": "2"},
    ),
}
#: Registry writes of each action (journal included). Every one is a kill position below;
#: ``test_every_write_is_a_kill_position`` fails when the count changes.
WRITES = {"gate": 26, "approve": 23, "rollback": 15}
#: Writes before the journal is armed (its pointer, then its one-chunk body).
ARMED_AFTER = 2


@dataclass
class World:
    store: Settings
    runs: list[str]
    decision: Any = None
    references: dict[str, Reference] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    before: dict[str, Any]
    after: dict[str, Any]
    writes: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("crash")
    store = Settings(
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        mlflow_experiment="mammo-crash",
        data_dir=root / "data",
        registered_model_name="runs",
    )
    (root / "plots").mkdir()
    for name in ("confusion_matrix.png", "roc_pr_curves.png", "training_curves.png"):
        (root / "plots" / name).write_bytes(tiny_png())
    return World(store, [make_run(store, signal) for signal in SIGNALS])


def fresh(world: World, case: str) -> Settings:
    """A new registered model: versions 1-3 of the world's runs, in the state of ``case``."""
    s = world.store.model_copy(update={"registered_model_name": f"crash{next(_names)}"})
    client = mlflow_client(s)
    for run_id in world.runs:
        registry.register_run(s, run_id, run_tags={"airflow_run_id": "af-1"})
    tags, aliases = STATES[case]
    for version, values in tags.items():
        for key, value in values.items():
            client.set_model_version_tag(s.registered_model_name, version, key, value)
    for alias, version in aliases.items():
        client.set_registered_model_alias(s.registered_model_name, alias, version)
    return s


def gate_decision(world: World, s: Settings) -> Any:
    """The gate's decision on v3 of the gate case, computed once (its bootstrap statistics
    then match between the reference and every killed run), addressed to ``s``'s model."""
    if world.decision is None:
        world.decision = registry.gate_version(s, "3")
        assert world.decision.passed, world.decision.reasons
    return dataclasses.replace(world.decision, model_name=s.registered_model_name)


ALICE, BOB = Identity("alice", "airflow"), Identity("bob", "airflow")
ACTIONS: dict[str, Callable[[World, Settings], object]] = {
    "gate": lambda w, s: record_verdict(s, "3", gate_decision(w, s)),
    "approve": lambda w, s: registry.approve(
        s, "3", "second reader agreed", who=ALICE, override_gate=True
    ),
    "rollback": lambda w, s: registry.rollback(s, "smoke test failed", who=BOB),
}


def _normal(key: str, value: str) -> Any:
    if key.endswith(("_at", "_since")):
        return "<time>"
    if key == "review_history":
        return [{k: v for k, v in h.items() if k != "at"} for h in json.loads(value)]
    if key == "signed_decision":  # signed anew by each run: the payload, no times or name
        payload = json.loads(value)["payload"]
        return {k: v for k, v in payload.items() if not k.endswith("_at") and k != "model"}
    return value


def snapshot(s: Settings) -> dict[str, Any]:
    """Aliases and every tag of versions 1-3 (times normalised); journal tags listed apart."""
    client = mlflow_client(s)
    name = s.registered_model_name
    tags, journal_tags = {}, []
    for v in VERSIONS:
        t = client.get_model_version(name, v).tags or {}
        tags[v] = {k: _normal(k, x) for k, x in t.items() if not k.startswith("mammo.")}
        journal_tags += [f"v{v}:{k}" for k in t if k.startswith("mammo.")]
    rm_tags = client.get_registered_model(name).tags or {}
    journal_tags += [k for k in rm_tags if k.startswith("mammo.")]
    return {"aliases": read_aliases(client, name), "tags": tags, "journal": sorted(journal_tags)}


def state(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if k != "journal"}


def reference(world: World, case: str) -> Reference:
    """The case run to its end in this process: states before and after, and its writes."""
    if case not in world.references:
        s = fresh(world, case)
        before = snapshot(s)
        with faults.recording() as writes:
            ACTIONS[case](world, s)
        after = snapshot(s)
        assert not after["journal"], after["journal"]
        assert state(after) != state(before)
        world.references[case] = Reference(state(before), state(after), list(writes))
    return world.references[case]


def run_killed_after(world: World, s: Settings, case: str, k: int) -> int:
    """Run the action of ``case`` in a forked child killed after its k-th registry write."""
    import gc
    import os

    # The worker forked here has run other modules (Keras models loaded on threads, TF, gRPC):
    # collected in the child, their inherited garbage can segfault it (seen once in CI, in
    # the child's GC). Collect in the parent and freeze the rest: the child never finalises
    # objects it inherited.
    gc.collect()
    gc.freeze()
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            gc.unfreeze()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.environ[faults.FAULT_ENV] = str(k)
            ACTIONS[case](world, s)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            sys.stdout.flush()
            os._exit(code)
    return wait_child(pid, timeout=60)


@pytest.mark.parametrize("case", sorted(STATES))
def test_every_write_is_a_kill_position(world, case):
    ref = reference(world, case)
    assert len(ref.writes) == WRITES[case], (
        f"{case} now makes {len(ref.writes)} registry writes (update WRITES so that the kill "
        f"test covers each): {ref.writes}"
    )
    assert ref.writes[:ARMED_AFTER] == ["journal pointer", "journal body 1/1"]
    assert ref.writes[-2:] == ["journal body 1/1 removed", "journal pointer removed"]
    kinds = [w.split()[0] for w in ref.writes[ARMED_AFTER:-2]]
    assert kinds == sorted(kinds, key=lambda w: w == "alias"), "tags first, aliases last"
    alias_writes = {i + 1 for i, w in enumerate(ref.writes) if w.startswith("alias")}
    assert alias_writes <= QUICK[case], "the quick run kills after every alias write"


#: Kill positions of the quick run (`make test-fast`): the journal's pointer alone, the journal
#: armed, the first verdict tag, each alias write, the journal removed. `make test` runs all.
QUICK = {"gate": {1, 2, 3, 21, 22, 23, 24, 26}, "approve": {1, 2, 19, 20, 21, 23},
         "rollback": {1, 2, 3, 12, 13, 15}}  # fmt: skip


def kill_positions() -> list[Any]:
    return [
        pytest.param(c, k, marks=() if k in QUICK[c] else pytest.mark.slow)
        for c in sorted(WRITES)
        for k in range(1, WRITES[c] + 1)
    ]


@pytest.mark.parametrize(("case", "k"), kill_positions())
def test_kill_after_each_write_then_the_next_command_repairs(world, case, k):
    ref = reference(world, case)
    s = fresh(world, case)
    assert state(snapshot(s)) == ref.before
    assert run_killed_after(world, s, case, k) == signal.SIGKILL

    raw = snapshot(s)
    champion = raw["aliases"].get("champion")
    assert champion in {ref.before["aliases"]["champion"], ref.after["aliases"]["champion"]}
    assert vetting_problem(champion, mlflow_client(s).get_model_version(
        s.registered_model_name, champion).tags) is None  # fmt: skip
    if not raw["journal"]:
        assert state(raw) in (ref.before, ref.after), f"killed after: {ref.writes[k - 1]}"

    done = journal.repair(s)  # what every command taking the registry lock does first
    after = snapshot(s)
    assert after["journal"] == []
    expected = ref.before if k < ARMED_AFTER else ref.after
    assert state(after) == expected, f"killed after write {k}: {ref.writes[k - 1]}"
    if k < len(ref.writes):
        assert len(done) == 1, done
        if k >= ARMED_AFTER and k < len(ref.writes) - 2:
            assert done[0].startswith("completed an interrupted"), done
    assert journal.repair(s) == []  # repaired once


def _kill_between_champion_and_previous(world: World, case: str) -> Settings:
    ref = reference(world, case)
    champion = ref.after["aliases"]["champion"]
    k = ref.writes.index(f"alias champion -> v{champion}") + 1
    assert ref.writes[k].startswith("alias previous"), ref.writes
    s = fresh(world, case)
    assert run_killed_after(world, s, case, k) == signal.SIGKILL
    return s


def test_next_gate_completes_a_promotion_killed_between_champion_and_previous(world):
    s = _kill_between_champion_and_previous(world, "gate")
    decision, result = registry.gate_and_promote(s, "1")
    assert any("completed an interrupted gate verdict on v3" in n for n in result.notes)
    assert decision.champion_version == "3" and decision.baseline_version == "3"
    a = read_aliases(mlflow_client(s), s.registered_model_name)
    assert (a["champion"], a["previous"], a["baseline"]) == ("3", "2", "3")
    assert snapshot(s)["journal"] == []


def test_failed_deploy_after_a_killed_promotion_rolls_back_the_completed_one(world):
    """The deployer serves the half-promoted v3 (``champion`` was written), fails, and moves
    the champion back: under the lock, so the promotion is completed first and the deployer
    rolls it back properly, rather than a later repair re-promoting the version that failed."""
    from mammo_pipeline.registry.deployments import undo_failed_deploy

    s = _kill_between_champion_and_previous(world, "gate")
    assert undo_failed_deploy(s, "3", "2", "smoke test failed").moved_to == "2"
    assert journal.repair(s) == []
    a = read_aliases(mlflow_client(s), s.registered_model_name)
    assert (a["champion"], a["previous"], a["baseline"]) == ("2", "1", "3")
    t = mlflow_client(s).get_model_version(s.registered_model_name, "3").tags
    assert t["deploy"] == "failed" and t["review"] == "rolled_back"


def test_cli_rollback_after_a_promotion_killed_between_champion_and_previous(
    world, monkeypatch, tmp_path
):
    """The issue's case: without the journal, ``previous`` was left on the champion and the
    next rollback had nowhere to go."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    s = _kill_between_champion_and_previous(world, "approve")
    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    monkeypatch.setenv("MAMMO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(
            app, ["registry", "rollback", "--reason", "smoke", "--no-deploy", "--json"]
        )
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, (out.output, out.exception)
    body = json.loads(out.stdout[out.stdout.index("{") :])
    assert body["champion_before"] == "3" and body["champion_after"] == "2", body
    assert body["previous_after"] == "1"
    assert body["repaired"] and "approval of v3 by alice" in body["repaired"][0]


def test_repair_command_reports_and_clears_a_killed_rollback(world, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    ref = reference(world, "rollback")
    s = fresh(world, "rollback")
    k = ref.writes.index("alias champion -> v2") + 1
    assert run_killed_after(world, s, "rollback", k) == signal.SIGKILL
    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    monkeypatch.setenv("MAMMO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(app, ["registry", "repair"])
        again = CliRunner().invoke(app, ["registry", "repair"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, (first.output, first.exception)
    assert "completed an interrupted rollback v3 -> v2 by bob" in first.stdout
    assert "alias previous -> v1" in first.stdout
    assert "nothing to repair" in again.stdout
    assert state(snapshot(s)) == ref.after


def test_unreadable_journal_refuses_to_act(world):
    from mammo_pipeline.errors import MammoError

    s = fresh(world, "rollback")
    mlflow_client(s).set_registered_model_tag(s.registered_model_name, journal.POINTER_TAG, "{")
    with pytest.raises(MammoError, match="not a journal"):
        registry.rollback(s, "x", who=BOB)
    assert read_aliases(mlflow_client(s), s.registered_model_name)["champion"] == "3"


def test_no_registry_is_created_by_taking_the_lock(tmp_path):
    s = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path}/none.db", data_dir=tmp_path)
    assert journal.repair(s) == []
    assert not Path(tmp_path / "none.db").exists()
