"""What the demo prints at its end about itself: the health of Airflow's components and the
memory its processes hold (``make demo``'s last lines; :mod:`.demo` starts the processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammo_pipeline.common.processes import running
from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration.airflow_cli import health, run_count, say

GIB = 1024**3


def process_memory(state: Path, settings: Settings | None = None) -> dict[str, Any]:
    """Resident memory of the demo's processes: every service recorded in ``state`` with all
    its descendants (task runners, workers), plus the model service's backend and proxy when
    ``settings`` are given. Returns ``{"processes": N, "rss": bytes, "by_service": {name:
    bytes}}``; a process that ends while being measured is left out."""
    import psutil

    roots = {name: svc.pid for name, svc in running(state).items()}
    if settings is not None:
        from mammo_pipeline.serving.state import read_state

        served = read_state(settings)
        for role in ("backend", "proxy"):
            pid = (served.get(role) or {}).get("pid")
            if pid:
                roots[f"model-service-{role}"] = pid
    seen: set[int] = set()
    by_service: dict[str, int] = {}
    for name, pid in roots.items():
        try:
            family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            continue
        total = 0
        for proc in family:
            if proc.pid in seen:
                continue
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
            seen.add(proc.pid)
        by_service[name] = total
    return {"processes": len(seen), "rss": sum(by_service.values()), "by_service": by_service}


def say_health_and_memory(
    settings: Settings, env: dict[str, str], *, api_port: int, state: Path
) -> bool:
    """Print Airflow's component health, the validation runs so far and the processes'
    memory; True when every component the api-server reports is healthy."""
    parts = health(api_port)
    say("Airflow health (GET /api/v2/monitor/health): "
        + ", ".join(f"{k} {v}" for k, v in parts.items()))  # fmt: skip
    runs = run_count(env, "mammo_validate_incoming")
    say(f"mammo_validate_incoming: {runs} runs so far (schedule: every "
        f"{settings.validate_every_minutes} min, plus the demo's own trigger)")  # fmt: skip
    mem = process_memory(state, settings)
    say(f"memory     : {mem['processes']} demo processes hold {mem['rss'] / GIB:.2f} GiB "
        "(sum of resident sets, psutil; shared pages counted in each): "
        + ", ".join(f"{k} {v / GIB:.2f}" for k, v in mem["by_service"].items()))  # fmt: skip
    return bool(parts) and all(v == "healthy" for v in parts.values())
