"""``mammo registry``: register, gate and review model versions in the MLflow registry.

Exit codes: 0 when the command ran (a FAILED gate included, unless ``--strict``), 1 when it
could not run or refused (unknown version, store unreachable, nothing to roll back, an
approval whose re-gate failed, a deploy that failed...), 2 from ``gate --strict`` when the
version failed the gate.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from mammo_pipeline.config import Settings
    from mammo_pipeline.registry import ReviewResult

app = typer.Typer(
    help="Model registry: gate, promote, list, compare, approve, reject, roll back.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    """The settings, refusing to create a registry as a side effect (one line naming the
    missing store file and how to point at the demo's)."""
    from mammo_pipeline.cli.store import existing_store_settings

    return existing_store_settings()


#: Width of wrapped reason and statistics lines.
WIDTH = 100


def wrap(text: str, indent: int = 2) -> str:
    """``text`` wrapped at :data:`WIDTH`, continuation lines indented by ``indent``."""
    import textwrap

    return textwrap.fill(
        text, WIDTH, subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False
    )


def checks_table(checks: Any) -> str:
    """The gate's checks, one short line each; the reasons of failing ones are printed once,
    wrapped, with the verdict (not again in a 700-character table column)."""
    from mammo_pipeline.registry.report_html import text_table

    rows = [("PASS" if c.passed else "FAIL", c.name, c.observed, c.op, c.threshold) for c in checks]
    return text_table(("result", "check", "observed", "op", "threshold"), rows)


def _echo_result(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))


@app.command("register")
def register_cmd(
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run of the training")],
    airflow_run_id: Annotated[str | None, typer.Option(help="Airflow run id to record")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Register the model of a training run (idempotent: a run is registered once)."""
    from mammo_pipeline.registry import register_run

    ref = register_run(_settings(), run_id, {"airflow_run_id": airflow_run_id or ""})
    if as_json:
        return _echo_result(ref.to_dict(), True)
    what = "registered as" if ref.created else "already registered as"
    typer.echo(f"run {ref.run_id} {what} {ref.name} version {ref.version} ({ref.source})")


@app.command("gate")
def gate_cmd(
    version: Annotated[str, typer.Option("--version", "-v", help="model version to gate")],
    min_precision: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="default: settings.min_precision")
    ] = None,
    min_recall: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="default: settings.min_recall")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only check: write no tag, move no alias")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 2 when the gate fails")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Check a version against the policy, the champion and the baseline (paired statistics
    on the same test tiles), then promote it or not. Options may only tighten the policy."""
    from mammo_pipeline.registry import Verdict, gate_and_promote, gate_summary, gate_version

    s = _settings()
    requested = {"min_precision": min_precision, "min_recall": min_recall}
    if dry_run:
        decision, result = gate_version(s, version, requested=requested), None
    else:
        decision, result = gate_and_promote(s, version, requested=requested)
    verdict = result.verdict if result else decision.verdict
    if as_json:
        _echo_result(
            {"decision": decision.to_dict(), "promotion": result.to_dict() if result else None},
            True,
        )
    else:
        for line in gate_summary(s, version, decision, result):
            if line.startswith("verdict: "):
                colour = typer.colors.GREEN if verdict == Verdict.PASSED else typer.colors.RED
                typer.secho(line, fg=colour, bold=True)
            else:
                typer.echo(line if "\n" in line else wrap(line, indent=4))
    failed = verdict != Verdict.PASSED
    if strict and failed:
        raise typer.Exit(2)


@app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """All versions with aliases, gate verdict and key test metrics."""
    from mammo_pipeline.registry import list_versions
    from mammo_pipeline.registry.report_html import text_table

    s = _settings()
    rows = list_versions(s)
    if as_json:
        return _echo_result(
            {"name": s.registered_model_name, "versions": [r.to_dict() for r in rows]}, True
        )
    from mammo_pipeline.common.mlflow_access import describe_store

    store = describe_store(s)
    if not rows:
        typer.echo(f"{s.registered_model_name}: no versions registered in {store}")
        return None
    typer.echo(f"{s.registered_model_name} (registry: {store})")
    typer.echo(
        text_table(
            (
                "version",
                "aliases",
                "gate",
                "vetted",
                "review",
                "precision",
                "recall",
                "f1",
                "roc_auc",
                "threshold",
                "created",
                "run",
            ),
            [
                (
                    r.version,
                    ",".join(r.aliases) or "-",
                    r.gate,
                    "yes" if r.vetted else "no",
                    r.review or "-",
                    r.metrics.get("test_precision"),
                    r.metrics.get("test_recall"),
                    r.metrics.get("test_f1"),
                    r.metrics.get("test_roc_auc"),
                    r.metrics.get("decision_threshold"),
                    r.created,
                    (r.run_id or "-")[:12],
                )
                for r in rows
            ],
        )
    )
    return None


@app.command("show")
def show_cmd(
    version: Annotated[str, typer.Argument(help="model version")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A version beside the champion, metric by metric, with links to its plots."""
    from mammo_pipeline.registry import review_context
    from mammo_pipeline.registry.report_html import metric_rows, statistics_lines, text_table
    from mammo_pipeline.registry.state import verified_state

    s = _settings()
    ctx = review_context(s, version)
    state = verified_state(s, ctx.version, ctx.run_id, ctx.tags, ctx.aliases)
    rows = metric_rows(ctx)
    if as_json:
        return _echo_result(
            {
                "name": ctx.model_name,
                "version": ctx.version,
                "aliases": ctx.aliases,
                "champion_version": ctx.champion_version,
                "tags": ctx.tags,
                "state": state.to_dict(),
                "metrics": [r.__dict__ for r in rows],
                "links": ctx.links,
            },
            True,
        )
    if ctx.champion_version:
        champ = f"v{ctx.champion_version}"
    else:  # the champion is compared with nobody: it is the champion
        champ = "this version" if "champion" in ctx.aliases else "none"
    typer.echo(
        f"{ctx.model_name} v{ctx.version}  aliases: {', '.join(ctx.aliases) or '-'}  "
        f"gate: {state.gate_label}  review: {state.review.action if state.review else '-'}  "
        f"champion: {champ}" + ("  [SYNTHETIC DATA]" if ctx.synthetic else "")
    )
    problem = state.vetting_problem()
    typer.echo("vetted: yes" if problem is None else wrap(f"vetted: no: {problem}", indent=4))
    typer.echo(f"run: {ctx.run_id or '-'}")
    reasons = list(ctx.decision.reasons) if ctx.decision is not None else []
    if not reasons and state.gate_reasons:
        reasons = state.gate_reasons.split("; ")
    if reasons == ["all checks passed"]:
        typer.echo("gate reasons: all checks passed")
    elif reasons:
        typer.echo("gate reasons:")
        for reason in reasons:
            typer.echo(wrap(f"  - {reason}", indent=4))
    if state.review is not None:
        r = state.review
        typer.echo(f"review: {r.label} at {r.at or '?'}: {r.reason}")
    typer.echo("")
    typer.echo(
        text_table(
            ("metric", "candidate", f"champion {champ}", "delta", "threshold", "verdict"),
            [
                (
                    r.metric,
                    r.candidate,
                    r.champion,
                    (r.candidate - r.champion)
                    if isinstance(r.candidate, float) and isinstance(r.champion, float)
                    else None,
                    r.threshold or "-",
                    r.verdict or "-",
                )
                for r in rows
            ],
        )
    )
    if ctx.decision is not None:
        stats = statistics_lines(ctx.decision)
        if stats:
            typer.echo("\nstatistics of the last gate:")
            for line in stats:
                typer.echo(wrap(f"  {line}", indent=4))
        typer.echo(f"\nlast gate checks ({ctx.decision.evaluated_at}):")
        typer.echo(checks_table(ctx.decision.checks))
    for key in ("data_manifest_sha256", "test_manifest_sha256", "git_commit", "airflow_run_id"):
        if ctx.tags.get(key):
            typer.echo(f"{key}: {ctx.tags[key]}")
    if ctx.links:
        typer.echo("\nplots and reports:")
        for name, link in sorted(ctx.links.items()):
            typer.echo(f"  {name}: {link}")
    return None


def _print_review(result: ReviewResult, as_json: bool) -> None:
    if as_json:
        return _echo_result(result.to_dict(), True)
    typer.echo(result.message or f"{result.action} v{result.version}")
    typer.echo(
        f"by {result.who} at {result.at}: {result.reason}\n"
        f"champion: {result.champion_after or '-'}  previous: {result.previous_after or '-'}  "
        f"challenger: {result.challenger_after or '-'}"
    )
    return None


#: ``--no-deploy`` of the commands that can move the champion.
NoDeploy = Annotated[
    bool,
    typer.Option(
        "--no-deploy",
        help="change the registry only; print the command that would deploy the new champion",
    ),
]


def _print_and_follow(s: Settings, result: ReviewResult, no_deploy: bool, as_json: bool) -> None:
    """Print the registry action, then serve its new champion where a deployment is live
    (:func:`mammo_pipeline.serving.deploy.follow_champion` decides); a failed deploy exits 1."""
    from mammo_pipeline.errors import MammoError
    from mammo_pipeline.serving.deploy import follow_champion

    if not as_json:
        _print_review(result, False)
    follow = follow_champion(s, result.champion_before, result.champion_after, deploy=not no_deploy)
    if as_json:
        _echo_result({**result.to_dict(), "serving": follow.to_dict()}, True)
    else:
        for step in follow.deploy.steps if follow.deploy else []:
            typer.echo(f"- {step}")
        if follow.ok:
            typer.echo(follow.message)
    if not follow.ok:
        raise MammoError(follow.message)


@app.command("approve")
def approve_cmd(
    version: Annotated[str, typer.Argument(help="model version")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded on the version)")],
    override_rejection: Annotated[
        bool, typer.Option("--override-rejection", help="approve a version a reviewer rejected")
    ] = False,
    override_gate: Annotated[bool, typer.Option(help="champion despite a failed gate")] = False,
    no_deploy: NoDeploy = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Approve a version: one waiting for approval is re-gated if the champion changed since;
    any other becomes the champion by your recorded decision (gate=manual; a failed gate needs
    --override-gate). You are recorded as authenticated (MLflow user, else OS user). A new
    champion is deployed blue/green when a deployment is live here (unless --no-deploy)."""
    from mammo_pipeline.errors import MammoError
    from mammo_pipeline.registry import approve

    s = _settings()
    result = approve(s, version, reason, override_rejection=override_rejection,
                     override_gate=override_gate)  # fmt: skip
    _print_and_follow(s, result, no_deploy, as_json)
    if result.champion_after != result.version:  # the re-gate refused the promotion
        raise MammoError(
            f"v{result.version} is not the champion: the approval is recorded, but the gate, "
            "re-run because the references changed, failed it (reasons above)"
        )


@app.command("reject")
def reject_cmd(
    version: Annotated[str, typer.Argument(help="model version")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded on the version)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Reject a version (it loses challenger/previous and fails later gates). Not the champion."""
    from mammo_pipeline.registry import reject

    _print_review(reject(_settings(), version, reason), as_json)


@app.command("rollback")
def rollback_cmd(
    reason: Annotated[str | None, typer.Option("--reason", help="why")] = None,
    no_deploy: NoDeploy = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Put the previous champion back (alias champion -> previous) and, when a deployment is
    live on this machine, serve it (blue/green, smoke-tested) unless --no-deploy."""
    from mammo_pipeline.registry import rollback

    s = _settings()
    _print_and_follow(s, rollback(s, reason), no_deploy, as_json)


@app.command("pin")
def pin_cmd(
    version: Annotated[str, typer.Argument(help="model version")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded on the version)")],
    no_deploy: NoDeploy = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Pin a vetted version as the baseline every candidate must not fall behind (the
    champion does not move; if it ever did, it would be deployed as after a rollback)."""
    from mammo_pipeline.registry import pin_baseline

    s = _settings()
    _print_and_follow(s, pin_baseline(s, version, reason), no_deploy, as_json)


@app.command("repair", help="Finish a registry action a killed process left half-written.")
def repair_cmd() -> None:  # every command that takes the registry lock does this first
    from mammo_pipeline.registry import repair

    typer.echo("\n".join(repair(_settings())) or "nothing to repair")


def register(main_app: typer.Typer) -> None:
    """Add ``mammo registry ...`` to the top-level app."""
    main_app.add_typer(app, name="registry")
