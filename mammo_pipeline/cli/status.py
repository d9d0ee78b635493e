"""``mammo status``: one screen on what is decided and what is served.

The champion (version, gate), what the live port serves (asked of the service itself:
``GET /model``, ``/readyz``; since when and which process from the state file), the
challenger and any version awaiting approval, and the last gate result. Reads only: a missing
registry is one line and exit 1, nothing is created.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mammo_pipeline.config import Settings


def registry_summary(s: Settings) -> dict[str, Any]:
    """Champion, challenger, versions awaiting approval and the last gate, from each
    version's :class:`~mammo_pipeline.registry.state.VersionState`."""
    from mammo_pipeline.common.mlflow_access import describe_store, mlflow_client
    from mammo_pipeline.registry.names import BASELINE, CHALLENGER, CHAMPION, PREVIOUS
    from mammo_pipeline.registry.state import VersionState, state_of
    from mammo_pipeline.registry.store import aliases_of, escape, mlflow_errors, read_aliases

    name = s.registered_model_name
    client = mlflow_client(s)
    with mlflow_errors(f"reading {name!r}"):
        aliases = read_aliases(client, name)
        states = {
            str(mv.version): state_of(s, mv, aliases_of(aliases, str(mv.version)), verify=True)
            for mv in client.search_model_versions(f"name = '{escape(name)}'")
        }

    def brief(version: str | None) -> dict[str, Any] | None:
        if version is None:
            return None
        st = states.get(version) or VersionState.of(version, {})
        return {
            "version": version,
            "gate": st.gate or "-",
            "gate_label": st.gate_label,
            "review": st.review_label or None,
            "deploy": st.deploy,
            "gate_at": st.gate_at,
            "gate_reasons": st.gate_reasons or None,
            "vetted": st.vetted,
            "not_vetted_because": st.vetting_problem(),
        }

    gated = [v for v, st in states.items() if st.gate_at]
    last = max(gated, key=lambda v: states[v].gate_at or "", default=None)
    awaiting = sorted((v for v, st in states.items() if st.awaiting_approval), key=int)
    return {
        "name": name,
        "store": describe_store(s),
        "versions": len(states),
        "aliases": aliases,
        "champion": brief(aliases.get(CHAMPION)),
        "previous": aliases.get(PREVIOUS),
        "baseline": aliases.get(BASELINE),
        "challenger": brief(aliases.get(CHALLENGER)),
        "awaiting_approval": [brief(v) for v in awaiting],
        "last_gate": brief(last),
    }


def status_lines(reg: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The screen, one fact a line."""

    def ver(b: dict[str, Any] | None) -> str:
        if b is None:
            return "none"
        extra = f", review {b['review']}" if b.get("review") else ""
        vetted = "" if b["vetted"] else ", NOT vetted"
        return f"v{b['version']} (gate {b['gate_label']}{extra}{vetted})"

    champ = reg["champion"]
    lines = [f"{reg['name']} (registry: {reg['store']}, {reg['versions']} versions)"]
    prev, base = reg["previous"], reg["baseline"]
    lines.append(
        f"champion:   {ver(champ)}  previous: {'v' + prev if prev else '-'}  "
        f"baseline: {'v' + base if base else '-'}"
    )
    if live["version"] is not None:
        health = "healthy (/readyz 200)" if live["ready"] else "NOT ready (/readyz not 200)"
        since = f" since {live['since']}" if live["since"] and live["backend_alive"] else ""
        lines.append(f"live:       v{live['version']} at {live['url']}{since}, {health}")
    elif live["state_version"] and live["backend_alive"]:
        lines.append(
            f"live:       the state file names v{live['state_version']} (pid "
            f"{live['backend_pid']}) but {live['url']} does not answer: {live['error']}"
        )
    else:
        lines.append(
            f"live:       nothing answers at {live['url']} ({live['error'] or 'no answer'}); "
            "run `mammo deploy`"
        )
    if champ and live["version"] is not None and live["version"] != champ["version"]:
        lines.append(
            f"WARNING:    the live service serves v{live['version']}, the champion is "
            f"v{champ['version']}: run `mammo deploy` to serve the champion"
        )
    lines.append(f"challenger: {ver(reg['challenger'])}")
    for b in reg["awaiting_approval"]:
        lines.append(
            f"awaiting approval: {ver(b)}: mammo registry approve {b['version']} --reason TEXT"
        )
    last = reg["last_gate"]
    if last is None:
        lines.append("last gate:  none")
    else:
        why = f": {last['gate_reasons']}" if last["gate_reasons"] else ""
        lines.append(f"last gate:  v{last['version']} {last['gate']} at {last['gate_at']}{why}")
    return lines


def register(app: typer.Typer) -> None:
    """Add ``mammo status`` to the top-level app."""

    @app.command("status")
    def status(
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """One screen: champion, what the live port serves (and whether it is healthy), the
        challenger or a version awaiting approval, and the last gate result."""
        from mammo_pipeline.cli.store import existing_store_settings
        from mammo_pipeline.serving.deploy import probe_live

        s = existing_store_settings()  # a missing store: one line, exit 1, nothing created
        reg, live = registry_summary(s), probe_live(s)
        if as_json:
            typer.echo(json.dumps({"registry": reg, "live": live}, indent=2, sort_keys=True))
            return
        for line in status_lines(reg, live):
            typer.echo(line)
