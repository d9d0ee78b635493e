"""The landing-to-served timeline (orchestration/timeline.py) on hand-made task instances:
the stages add up to the total, overlaps are counted once, the train task is split into the
model's epochs and the platform's overhead."""

from __future__ import annotations

import datetime as dt

import pytest

from mammo_pipeline.orchestration.timeline import OVERHEAD, STAGES, render, timeline

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def ti(task_id: str, start: float, end: float | None) -> dict[str, str]:
    iso = lambda s: (T0 + dt.timedelta(seconds=s)).isoformat() if s is not None else ""  # noqa: E731
    return {"task_id": task_id, "start_date": iso(start), "end_date": iso(end), "state": "x"}


def test_stages_add_up_and_split_training() -> None:
    dropped = T0.timestamp()
    validation = [ti("validate_landing", 5, 25), ti("publish_validated", 26, 27)]
    retraining = [
        ti("check_policy", 40, 41), ti("snapshot", 42, 44), ti("train", 45, 105),
        ti("evaluate", 106, 116), ti("register", 117, 119), ti("gate", 120, 125),
        ti("route", 125, 126), ti("report_gate_failure", None, None),  # skipped
        ti("promote", 127, 128), ti("deploy", 129, 149),
    ]  # fmt: skip
    t = timeline(dropped, validation, retraining, dropped + 151, training_compute_s=50.0)
    assert t.total_s == pytest.approx(151)
    assert sum(t.stages.values()) == pytest.approx(t.total_s)
    assert t.stages["validation"] == pytest.approx(21)
    assert t.stages["snapshot"] == pytest.approx(3)
    assert t.stages["training epochs"] == pytest.approx(50)
    assert t.stages["training overhead"] == pytest.approx(10)
    assert t.stages["evaluation"] == pytest.approx(10)
    assert t.stages["register and gate"] == pytest.approx(2 + 5 + 1 + 1)
    assert t.stages["deploy"] == pytest.approx(20 + 2)  # the task, then the live port answering
    assert t.stages["scheduler"] == pytest.approx(151 - 21 - 3 - 60 - 10 - 9 - 22)
    assert t.overhead_s == pytest.approx(151 - 50)
    assert set(OVERHEAD) == set(STAGES) - {"training epochs"}
    text = "\n".join(render(t, 300))
    assert "300 records" in text and "training epochs" in text and "%" in text


def test_overlapping_tasks_are_counted_once_and_compute_never_exceeds_the_task() -> None:
    dropped = T0.timestamp()
    validation = [ti("validate_landing", 1, 10), ti("validate_other", 5, 8)]  # parallel
    retraining = [ti("train", 12, 20)]
    t = timeline(dropped, validation, retraining, dropped + 21, training_compute_s=99.0)
    assert t.stages["validation"] == pytest.approx(9)
    assert t.stages["training epochs"] == pytest.approx(8)  # capped at the task's length
    assert t.stages["training overhead"] == pytest.approx(0)
    assert sum(t.stages.values()) == pytest.approx(21)
