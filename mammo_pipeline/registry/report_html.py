"""What a reviewer sees: the per-version review report (self-contained HTML) and the plain-text
tables of ``mammo registry list`` / ``show``.

Pure rendering: the data arrive in a :class:`ReviewContext` assembled by
``mammo_pipeline.registry``; nothing here talks to MLflow. Longer than 400 lines because it
is one self-contained page (and its text twin): split, one page's template would be spread
over several modules.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mammo_pipeline.registry.decision import (
    CHECK_MIN_PRECISION,
    CHECK_MIN_RECALL,
    REGRESSION_METRICS,
    RUN_TAGS_COPIED,
    TEST_METRICS,
    Check,
    GateDecision,
    fmt_value,
    utc_now,
)
from mammo_pipeline.registry.names import Review, Tag, Verdict
from mammo_pipeline.registry.state import VersionState

#: Rows of the side-by-side metric table, in order.
REPORT_METRICS: tuple[str, ...] = (
    *TEST_METRICS,
    "decision_threshold",
    "val_roc_auc",
    # film level (whole mammograms through /analyze), when the run was evaluated on films
    "film_roc_auc",
    "film_froc_sens_at_1fp",
    "film_top1_hit_rate",
    "film_sensitivity",
    "film_specificity",
    "film_threshold",
    "film_n",
)


@dataclass
class ReviewContext:
    """Everything the report and ``show`` display about one version."""

    model_name: str
    version: str
    run_id: str | None
    aliases: list[str]
    tags: dict[str, str]
    candidate_metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float]
    min_precision: float
    min_recall: float
    tolerance: float
    decision: GateDecision | None = None
    images: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    generated_at: str = field(default_factory=utc_now)

    @property
    def state(self) -> VersionState:
        return VersionState.of(self.version, self.tags, self.aliases)

    @property
    def gate(self) -> str:
        return self.state.gate or "-"

    @property
    def synthetic(self) -> bool:
        return self.tags.get(Tag.SYNTHETIC, "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class MetricRow:
    metric: str
    candidate: float | None
    champion: float | None
    threshold: str
    verdict: str  # PASS / FAIL / "" (informational)


def _checks_by_metric(checks: Sequence[Check]) -> dict[str, list[Check]]:
    out: dict[str, list[Check]] = {}
    for c in checks:
        if c.metric:
            out.setdefault(c.metric, []).append(c)
    return out


def metric_rows(ctx: ReviewContext) -> list[MetricRow]:
    """metric | candidate | champion | threshold | verdict, for the report and ``show``."""
    by_metric = _checks_by_metric(ctx.decision.checks) if ctx.decision else {}
    mins = {"test_precision": ctx.min_precision, "test_recall": ctx.min_recall}
    if ctx.decision is not None:
        for c in ctx.decision.checks:
            if c.name == CHECK_MIN_PRECISION and isinstance(c.threshold, float):
                mins["test_precision"] = c.threshold
            if c.name == CHECK_MIN_RECALL and isinstance(c.threshold, float):
                mins["test_recall"] = c.threshold
    rows = []
    for m in REPORT_METRICS:
        cand = ctx.candidate_metrics.get(m)
        champ = ctx.champion_metrics.get(m) if ctx.champion_version else None
        parts = []
        if m in mins:
            parts.append(f">= {fmt_value(mins[m])}")
        checks = by_metric.get(m, [])
        verdict = ("PASS" if all(c.passed for c in checks) else "FAIL") if checks else ""
        if cand is None and m in mins:
            verdict = "FAIL"
        rows.append(MetricRow(m, cand, champ, "; ".join(parts), verdict))
    return [r for r in rows if r.candidate is not None or r.champion is not None or r.threshold]


def statistics_lines(decision: GateDecision | None) -> list[str]:
    """The gate's statistics in words: test-set size, Wilson intervals of the absolute
    metrics, and the paired differences with 95% intervals against champion and baseline."""
    from mammo_pipeline.stats import Interval, PairedComparison

    stats = (decision.statistics if decision is not None else None) or {}
    if "n" not in stats:
        return []
    data = "SYNTHETIC data" if stats.get("synthetic") else "real data"
    lines = [f"test set: {stats['n']} tiles, {stats.get('positives')} positive ({data})"]
    for key, label in (("precision", "precision"), ("recall", "recall (sensitivity)")):
        if key in stats:
            lines.append(
                f"{label} at the decision threshold: {Interval.from_dict(stats[key]).describe()}"
            )
    for role in ("champion", "baseline"):
        vs = stats.get(f"vs_{role}")
        if not vs:
            continue
        comparison = PairedComparison.from_dict({k: v for k, v in vs.items() if k != "version"})
        lines.append(
            f"vs {role} v{vs['version']} (paired, same tiles, {comparison.n_resamples} "
            f"bootstrap resamples, {comparison.confidence:.0%} intervals):"
        )
        lines.extend(f"  {getattr(comparison, m).describe()}" for m in REGRESSION_METRICS)
    lines.extend(film_statistics_lines(stats))
    if decision is not None and decision.policy:
        lines.append(f"pass rule: lower bound of each difference >= -{decision.tolerance:g}")
    return lines


def film_statistics_lines(stats: Mapping[str, Any]) -> list[str]:
    """The film-level figures of the gate's statistics: the candidate's film ROC AUC [CI],
    FROC and hit rate with n, and the paired film differences against each reference."""
    from mammo_pipeline.stats import Interval, PairedDelta

    lines = []
    films = stats.get("films")
    if films:
        data = "SYNTHETIC data" if stats.get("synthetic") else "real data"
        froc = films.get("froc") or {}
        lines.append(
            f"film set (test films, what /analyze serves): {films['n']} films, "
            f"{films['positives']} with lesions ({data}); film ROC AUC "
            f"{Interval.from_dict(films['roc_auc']).describe()}; FROC sensitivity at 0.5/1/2 "
            f"FP per image {fmt_value(froc.get('0.5'))}/{fmt_value(froc.get('1'))}/"
            f"{fmt_value(froc.get('2'))}; top-1 hit rate {fmt_value(films.get('top1_hit_rate'))}"
        )
    for role in ("champion", "baseline"):
        vs = stats.get(f"films_vs_{role}")
        if vs:
            lines.append(
                f"vs {role} v{vs['version']} on films (paired over the same {vs['n']} films, "
                f"{vs['n_resamples']} bootstrap resamples, {vs['confidence']:.0%} intervals):"
            )
            lines.extend(f"  {PairedDelta.from_dict(d).describe()}" for d in vs["deltas"].values())
        elif stats.get(f"films_vs_{role}_skipped"):
            lines.append(f"vs {role}: {stats[f'films_vs_{role}_skipped']}")
    return lines


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns (no box drawing: greps and copies well)."""
    cells = [[str(h) for h in headers]] + [[fmt_value(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px}
.meta{color:#555;font-size:13px}
.verdict{display:inline-block;padding:6px 14px;border-radius:6px;font-weight:700;color:#fff}
.passed{background:#1a7f37} .failed{background:#cf222e} .manual{background:#8250df}
.pending{background:#6e7781} .synthetic{background:#bf8700;color:#fff;padding:2px 8px;
border-radius:4px;font-size:12px;margin-left:8px}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 10px;
text-align:left} th{background:#f6f8fa} td.num{text-align:right;font-family:monospace}
td.PASS{background:#dafbe1;color:#1a7f37;font-weight:700}
td.FAIL{background:#ffebe9;color:#cf222e;font-weight:700}
ul.reasons li{color:#cf222e} .plots img{max-width:560px;margin:6px;border:1px solid #d0d7de}
code{background:#f6f8fa;padding:1px 4px;border-radius:3px}
"""


def _e(value: Any) -> str:
    return html.escape(fmt_value(value) if not isinstance(value, str) else value)


def render_html(ctx: ReviewContext) -> str:
    """The self-contained review report of one version (inline CSS, plots inlined)."""
    state = ctx.state
    verdicts = {Verdict.PASSED, Verdict.FAILED, Verdict.MANUAL, Verdict.PENDING}
    gate = state.gate if state.gate in verdicts else Verdict.PENDING
    dec = ctx.decision
    title = f"{ctx.model_name} v{ctx.version}: gate {gate.upper()}"
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(ctx.model_name)} version {html.escape(ctx.version)}"
        + ("<span class='synthetic'>SYNTHETIC DATA</span>" if ctx.synthetic else "")
        + "</h1>",
        f"<p><span class='verdict {gate}'>gate: {gate.upper()}</span>"
        + (
            f" <span class='verdict {_REVIEW_CLASS.get(state.review.action, 'pending')}'>"
            f"review: {_e(state.review.action.upper())}</span>"
            if state.review is not None
            else ""
        )
        + "</p>",
        "<p class='meta'>",
        f"run <code>{_e(ctx.run_id or '-')}</code> &middot; aliases: "
        f"<b>{_e(aliases_after(ctx))}</b> &middot; champion compared: "
        f"<b>{_e('v' + ctx.champion_version if ctx.champion_version else 'none')}</b> "
        f"&middot; report generated {_e(ctx.generated_at)}",
        "</p>",
    ]
    if state.awaiting_approval:
        out.append(
            "<p><b>Passed the gate; waiting for a reviewer's approval "
            "(<code>mammo registry approve</code>).</b></p>"
        )
    if (o := state.override) is not None:
        source = state.review.source if state.review is not None else None
        who = f"{_e(o.by or '?')} ({_e(source or '?')} user)"
        out.append(f"<p class='override'><b>GATE OVERRIDDEN (automatic gate: "
                   f"{_e(o.auto)}) by {who}, {_e(o.at or '?')}: "
                   f"{_e(o.reason or '')}. An override never becomes the "
                   "baseline.</b></p>")  # fmt: skip
    # Decision summary: reasons or all clear.
    reasons = list(dec.reasons) if dec else []
    if not reasons and state.gate_reasons and gate == Verdict.FAILED:
        reasons = [state.gate_reasons]
    if reasons:
        heading = "Why the automatic gate failed" if gate == Verdict.MANUAL else "Why it failed"
        out.append(f"<h2>{heading}</h2><ul class='reasons'>")
        out.extend(f"<li>{html.escape(r)}</li>" for r in reasons)
        out.append("</ul>")
    # Manual actions, oldest first.
    history = review_history(ctx.tags)
    if history:
        out.append(
            "<h2>Human review</h2><table><tr><th>action</th><th>who</th><th>when</th>"
            "<th>why</th></tr>"
        )
        out.extend(
            f"<tr><td>{_e(h.get('action', '-'))}</td><td>{_e(h.get('by', '-'))}"
            + (f" ({_e(h['source'])} user)" if h.get("source", "-") != "-" else "")
            + "</td>"
            f"<td>{_e(h.get('at', '-'))}</td><td>{_e(h.get('reason', '-'))}</td></tr>"
            for h in history
        )
        out.append("</table>")
    if gate == Verdict.MANUAL and ctx.tags.get(Tag.GATE_AUTO):
        out.append(
            f"<p class='meta'>automatic gate verdict before approval: "
            f"<b>{_e(state.auto_verdict)}</b></p>"
        )
    # Metric table.
    out.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>candidate</th>"
        f"<th>champion{_e(' v' + ctx.champion_version if ctx.champion_version else '')}"
        "</th><th>threshold</th><th>verdict</th></tr>"
    )
    for r in metric_rows(ctx):
        out.append(
            f"<tr><td>{_e(r.metric)}</td><td class='num'>{_e(r.candidate)}</td>"
            f"<td class='num'>{_e(r.champion)}</td><td>{_e(r.threshold or '')}</td>"
            f"<td class='{r.verdict}'>{_e(r.verdict)}</td></tr>"
        )
    out.append("</table>")
    # Statistics: sample size, intervals, paired differences.
    stat_lines = statistics_lines(dec)
    if stat_lines:
        out.append("<h2>Statistics</h2><ul class='stats'>")
        out.extend(f"<li>{html.escape(line)}</li>" for line in stat_lines)
        out.append("</ul>")
    # Every check.
    if dec is not None:
        out.append(
            f"<h2>Gate checks ({_e(dec.evaluated_at)})</h2><table><tr><th>check</th>"
            "<th>observed</th><th>op</th><th>threshold</th><th>verdict</th>"
            "<th>reason</th></tr>"
        )
        for c in dec.checks:
            v = "PASS" if c.passed else "FAIL"
            out.append(
                f"<tr><td>{_e(c.name)}</td><td class='num'>{_e(c.observed)}</td>"
                f"<td>{_e(c.op)}</td><td class='num'>{_e(c.threshold)}</td>"
                f"<td class='{v}'>{v}</td><td>{_e(c.reason)}</td></tr>"
            )
        out.append("</table>")
    # Provenance.
    prov = [(k, ctx.tags.get(k)) for k in RUN_TAGS_COPIED]
    out.append("<h2>Provenance</h2><table>")
    out.extend(f"<tr><th>{_e(k)}</th><td><code>{_e(v or '-')}</code></td></tr>" for k, v in prov)
    out.append("</table>")
    # Plots.
    if ctx.images or ctx.links:
        out.append("<h2>Plots</h2><div class='plots'>")
        for name, data in sorted(ctx.images.items()):
            b64 = base64.b64encode(data).decode("ascii")
            out.append(
                f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{b64}'>"
                f"<figcaption>{_e(name)}</figcaption></figure>"
            )
        for name, link in sorted(ctx.links.items()):
            if name not in ctx.images and not name.startswith("review/"):
                out.append(f"<p><a href='{html.escape(link)}'>{_e(name)}</a></p>")
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


_REVIEW_CLASS = {Review.APPROVED: "passed", Review.REJECTED: "failed",
                 Review.ROLLED_BACK: "failed"}  # fmt: skip


def review_history(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The manual actions recorded on a version (``review_history`` tag, JSON), oldest first;
    falls back to the latest ``review*`` tags when the history is unreadable."""
    raw = tags.get(Tag.REVIEW_HISTORY)
    if raw:
        try:
            items = json.loads(raw)
            if isinstance(items, list):
                return [{k: str(v) for k, v in i.items()} for i in items if isinstance(i, dict)]
        except ValueError:
            pass
    review = VersionState.of("?", tags).review
    if review is None:
        return []
    return [{"action": review.action, "by": review.by or "-", "source": review.source or "-",
             "at": review.at or "-", "reason": review.reason or "-"}]  # fmt: skip


def aliases_after(ctx: ReviewContext) -> str:
    """The version's aliases as the decision this report records leaves them.

    Reports are written before the aliases move (a gate, an approval, a rejection, a
    rollback), so the aliases read then are the old ones: v1's report said "aliases: none"
    for the version its own gate made champion. The latest action (the gate's
    ``evaluated_at`` or the review's ``review_at``) decides what changes."""
    aliases = list(ctx.aliases)
    tags, dec = ctx.tags, ctx.decision
    state = VersionState.of(ctx.version, tags)
    review = state.review.action if state.review is not None else ""
    review_at = (state.review.at if state.review is not None else None) or ""
    gate_at = dec.evaluated_at if dec is not None else ""
    waiting = state.awaiting_approval
    add: list[str] = []
    drop: set[str] = set()
    if review and review_at >= (gate_at or ""):
        if review == Review.REJECTED:
            drop = {"challenger", "previous"}
        elif review == Review.ROLLED_BACK:
            drop = {"champion"}
        elif review == Review.APPROVED and not waiting:
            add, drop = ["champion"], {"challenger"}
    elif dec is not None and "champion" not in aliases and not waiting:
        if dec.passed:
            add, drop = ["champion"], {"challenger"}
        elif "challenger" not in aliases:
            add = ["challenger"]
    after = [a for a in dict.fromkeys([*add, *aliases]) if a not in drop or a in add]
    text = ", ".join(after) or "none"
    return text + (" (as this decision leaves them)" if after != aliases else "")


def checks_text(checks: Sequence[Check]) -> str:
    """One aligned line per check: verdict, name, observed, op, threshold, reason."""
    rows = [
        (
            "PASS" if c.passed else "FAIL",
            c.name,
            c.observed,
            c.op,
            c.threshold,
            "" if c.passed else c.reason,
        )
        for c in checks
    ]
    return text_table(("result", "check", "observed", "op", "threshold", "reason"), rows)


def tags_subset(tags: Mapping[str, str], keys: Sequence[str]) -> list[tuple[str, str]]:
    return [(k, tags[k]) for k in keys if k in tags]
