"""Where the time goes from a file landing to its model answering on the live port: the
stages of one validation run and the retraining run it triggered, from Airflow's task
instances and the training run's own epoch timings (``benchmarks/landing_to_served.py``).

A stage is wall time on the critical path; the stages add up to the total:

- ``scheduler``: waits for Airflow to start the next run or task (the trigger to the first
  task, the gap between the validation run and the retraining run, the gaps between tasks);
- ``validation``: the validation DAG's tasks;
- ``snapshot``: the policy check and the data snapshot;
- ``training epochs``: the model's own work in the train task (epochs and feature caching,
  as logged by the run); ``training overhead`` is the rest of that task (imports, data
  split, logging);
- ``evaluation``; ``register and gate`` (register, gate, route, approval, promote);
- ``deploy``: the deploy task and the wait until the live port answers with the new version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Task id -> stage of the retraining run; tasks not listed count as ``register and gate``.
STAGE_OF_TASK: dict[str, str] = {
    "check_policy": "snapshot",
    "snapshot": "snapshot",
    "train": "training",
    "evaluate": "evaluation",
    "deploy": "deploy",
}
STAGES = ("scheduler", "validation", "snapshot", "training epochs", "training overhead",
          "evaluation", "register and gate", "deploy")  # fmt: skip
#: Stages that are the platform's own overhead (everything but the model's epochs).
OVERHEAD = tuple(s for s in STAGES if s != "training epochs")


@dataclass(frozen=True)
class TaskSpan:
    task_id: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value).timestamp()


def spans(task_instances: Iterable[Mapping[str, Any]]) -> list[TaskSpan]:
    """Finished task instances (``airflow tasks states-for-dag-run -o json`` rows) as spans
    in start order; skipped tasks (no start) are left out."""
    out = []
    for ti in task_instances:
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        if start is not None and end is not None:
            out.append(TaskSpan(str(ti["task_id"]), start, end))
    return sorted(out, key=lambda s: (s.start, s.end))


def _busy(spans_: Sequence[TaskSpan], t0: float) -> tuple[float, float]:
    """(seconds covered by at least one span after ``t0``, end of the last span)."""
    covered, cursor = 0.0, t0
    for s in spans_:
        start, end = max(s.start, cursor), s.end
        if end > start:
            covered += end - start
            cursor = end
    return covered, cursor


@dataclass
class Timeline:
    total_s: float
    stages: dict[str, float] = field(default_factory=dict)

    def share(self, stage: str) -> float:
        return self.stages.get(stage, 0.0) / self.total_s if self.total_s > 0 else 0.0

    @property
    def overhead_s(self) -> float:
        return sum(self.stages.get(s, 0.0) for s in OVERHEAD)


def timeline(
    dropped_at: float,
    validation: Iterable[Mapping[str, Any]],
    retraining: Iterable[Mapping[str, Any]],
    served_at: float,
    training_compute_s: float,
) -> Timeline:
    """The stages from ``dropped_at`` (the file renamed into landing) to ``served_at`` (the
    live port first answered with the new version). ``training_compute_s``: the run's epoch
    and feature-caching seconds, taken out of the train task."""
    stages = dict.fromkeys(STAGES, 0.0)
    val = spans(validation)
    ret = spans(retraining)
    busy_val, val_end = _busy(val, dropped_at)
    stages["validation"] = busy_val
    cursor = val_end
    for s in ret:
        start = max(s.start, cursor)
        if s.end <= start:
            continue  # overlapped by a task already counted
        stage = STAGE_OF_TASK.get(s.task_id, "register and gate")
        seconds = s.end - start
        if stage == "training":
            compute = min(training_compute_s, seconds)
            stages["training epochs"] += compute
            stages["training overhead"] += seconds - compute
        else:
            stages[stage] += seconds
        cursor = s.end
    stages["deploy"] += max(0.0, served_at - cursor)  # the live port answering the new version
    total = served_at - dropped_at
    stages["scheduler"] = max(0.0, total - sum(v for k, v in stages.items() if k != "scheduler"))
    return Timeline(total_s=total, stages=stages)


def render(t: Timeline, records: int, until: str = "served") -> list[str]:
    """One line per stage with its seconds and share, then the overhead. ``until``: where
    the clock stopped (a refused gate stops it at the run's last task)."""
    lines = [f"landing -> {until}: {t.total_s:.1f} s for a file of {records} records"]
    for stage in STAGES:
        lines.append(
            f"  {stage:<18} {t.stages.get(stage, 0.0):7.1f} s  {100 * t.share(stage):5.1f} %"
        )
    lines.append(f"  platform overhead (all but training epochs): {t.overhead_s:.1f} s")
    return lines
