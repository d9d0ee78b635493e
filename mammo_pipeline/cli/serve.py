"""`mammo deploy`, `serve`, `serving-node`, `predict`, `stop`: the serve stage's commands."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import typer

from mammo_pipeline.cli.help import require_file
from mammo_pipeline.cli.store import existing_store_settings
from mammo_pipeline.common.auth import auth_headers, require_auth_configured
from mammo_pipeline.config import get_settings
from mammo_pipeline.errors import MammoError


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level `mammo` app."""

    @app.command("deploy")
    def deploy(
        version: str | None = typer.Option(
            None, "--version", help="registry version (default: the 'champion' alias)"
        ),
        reason: str = typer.Option(
            "manual deploy (`mammo deploy --version`)",
            "--reason",
            help="recorded when --version is not the champion and becomes it by your approval",
        ),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Blue/green deploy: start beside the live service, smoke-test, switch. A vetted
        --version that is not the champion becomes the champion first, by your recorded
        approval (the same rule as a manual mammo_deploy run in Airflow)."""
        settings = existing_store_settings()  # before the lock file or a store is created
        require_auth_configured(settings)  # no key and MAMMO_AUTH=key: nothing starts
        from mammo_pipeline.registry.approvals import champion_for_deploy
        from mammo_pipeline.serving.deploy import deploy_version

        if version is not None:
            approval = champion_for_deploy(settings, str(version), reason, None)
            if approval is not None and not as_json:
                typer.echo(approval.message)
        result = deploy_version(settings, version)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        else:
            for step in result.steps:
                typer.echo(f"- {step}")
            if result.ok:  # a failure's message is the error line below, printed once
                typer.echo(result.message)
        if not result.ok:
            rolled = result.alias_rolled_back_to
            extra = f"; alias 'champion' rolled back to {rolled}" if rolled else ""
            raise MammoError(f"deploy failed: {result.message}{extra}")

    @app.command("serving-node")
    def serving_node(
        queues: str = typer.Option("serving", help="Celery queue(s) of the deploy tasks"),
        concurrency: int = typer.Option(1, min=1, help="Celery worker concurrency"),
    ) -> None:
        """Run a serving host of the distributed stack: deploy the current champion (if there
        is one) behind the live port, then become an Airflow Celery worker on the `serving`
        queue, so that the DAGs' deploy tasks run here, where the service lives."""
        import os

        from mammo_pipeline.serving.deploy import deploy_version

        require_auth_configured(get_settings())  # never a serving host that would fail open
        try:
            result = deploy_version(existing_store_settings())
            typer.echo(result.message)
        except MammoError as exc:  # no champion yet: the first retrain's deploy starts it
            typer.echo(f"nothing deployed at start: {exc}")
        argv = [
            "airflow",
            "celery",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--celery-hostname",
            "serving@%h",
        ]
        try:
            os.execvp(argv[0], argv)
        except FileNotFoundError:
            raise MammoError(
                "`airflow` is not on PATH: activate the environment (.venv/bin) first"
            ) from None

    @app.command("serve")
    def serve(
        version: str | None = typer.Option(
            None, "--version", help="registry version (default: MAMMO_SERVE_VERSION / champion)"
        ),
    ) -> None:
        """Run the prediction service in the foreground on serve_host:serve_port."""
        settings = existing_store_settings()  # nothing created when there is no registry
        require_auth_configured(settings)  # no key and MAMMO_AUTH=key: nothing starts
        from mammo_pipeline.serving.backend import serve_foreground
        from mammo_pipeline.serving.model_loader import describe_version, resolve_version

        # One clear line (exit 1) when there is nothing to serve or the service would refuse
        # the version (not vetted, no threshold), before BentoML starts: the exec'd server
        # would refuse it too, but exit 0.
        resolved = resolve_version(settings, version or settings.serve_version)
        describe_version(settings, resolved)
        typer.echo(f"serving {settings.registered_model_name} version {resolved}")
        serve_foreground(settings, resolved)

    @app.command("stop")
    def stop() -> None:
        """Stop the locally deployed service and its live-port proxy."""
        from mammo_pipeline.serving.deploy import stop_service

        stopped = stop_service(get_settings())
        if not stopped:
            typer.echo("nothing was running")
        for role, pid in stopped.items():
            typer.echo(f"stopped the model service {role} (pid {pid})")

    @app.command("predict")
    def predict(
        image: Path = typer.Argument(
            ..., help="a tile or a whole mammogram: PNG, JPEG, PGM, DICOM or a tile .npy"
        ),
        url: str | None = typer.Option(None, "--url", help="service URL (default: live port)"),
        timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the answer"),
        analyze: bool = typer.Option(
            False, "--analyze", help="always use /analyze (default: for images over 2 tiles)"
        ),
        heatmap: Path | None = typer.Option(
            None, "--heatmap", dir_okay=False, help="write the /analyze heatmap PNG here"
        ),
        spacing: float | None = typer.Option(
            None, "--pixel-spacing-mm", help="mm per pixel (default: the DICOM's, else 0.1)"
        ),
        synthetic: bool = typer.Option(
            False,
            "--synthetic",
            help="declare the image SYNTHETIC (files the project generates say so themselves)",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="print the service's whole answer as JSON"
        ),
    ) -> None:
        """Send IMAGE to the service and print a short summary of its answer.

        A tile goes to /predict, a whole mammogram (or with --analyze / --heatmap) to /analyze.
        The summary names the score, label, operating point, top regions, the pixel spacing
        used and the heatmap file; --json prints the whole answer instead."""
        import httpx

        settings = get_settings()
        base = url or f"http://{settings.serve_host}:{settings.serve_port}"
        if base.split("://", 1)[-1].startswith("0.0.0.0"):
            base = base.replace("0.0.0.0", "127.0.0.1", 1)
        require_file(image)
        try:
            data = image.read_bytes()
        except OSError as exc:
            raise MammoError(f"{image}: cannot read the file: {exc.strerror}") from None
        from mammo_pipeline.data.provenance import SYNTHETIC, file_provenance

        synthetic = synthetic or file_provenance(image, data) == SYNTHETIC
        use_analyze = analyze or heatmap is not None or spacing is not None
        use_analyze = use_analyze or is_whole_image(data, image.name)

        def post(route: str) -> httpx.Response:
            form: dict[str, str] = {}
            if route == "/analyze":
                form = {"heatmap": json.dumps(heatmap is not None),
                        "synthetic": json.dumps(synthetic)}  # fmt: skip
                if spacing is not None:
                    form["pixel_spacing_mm"] = repr(spacing)
            try:
                return httpx.post(
                    f"{base.rstrip('/')}{route}",
                    files={"image": (image.name, data)},
                    data=form,
                    headers=auth_headers(settings.api_key),
                    timeout=timeout,
                )
            except httpx.HTTPError as exc:
                raise MammoError(f"{image}: cannot reach the service at {base}: {exc}") from None

        resp = post("/analyze" if use_analyze else "/predict")
        if not use_analyze and resp.status_code == 422 and "/analyze" in error_message(resp):
            use_analyze, resp = True, post("/analyze")  # the service says: a whole mammogram
        if resp.status_code != 200:
            raise MammoError(f"{image}: HTTP {resp.status_code}: {error_message(resp)}")
        body = resp.json()
        if heatmap is not None and isinstance(body, dict):
            encoded = body.pop("heatmap_png_base64", None)
            if not encoded:
                raise MammoError(f"{image}: the service sent no heatmap")
            write_atomic(heatmap, base64.b64decode(encoded))
            body["heatmap_written_to"] = str(heatmap)
        if as_json:
            typer.echo(json.dumps(body, indent=2))
        else:
            typer.echo("\n".join(summary_lines(body, image, synthetic)))
        if use_analyze and (warning := assumed_spacing_warning(body, image)):
            typer.secho(warning, err=True, fg=typer.colors.YELLOW, bold=True)


def summary_lines(body: object, image: Path, synthetic: bool) -> list[str]:
    """The service's answer for a person: score, label, operating point, model, and for a
    whole mammogram the top regions, the pixel spacing used and the heatmap file."""
    if not isinstance(body, dict):
        return [json.dumps(body)]
    from mammo_pipeline.data.provenance import NOT_DECLARED, SYNTHETIC

    origin = SYNTHETIC if synthetic else NOT_DECLARED
    model = f"model {body.get('model_name', '?')} version {body.get('model_version', '?')}"
    if "score" not in body:  # /predict: one tile
        return [
            f"{image.name} ({origin}): probability {_num(body.get('probability'))} -> "
            f"{str(body.get('label', '?')).upper()} at threshold {_num(body.get('threshold'))}",
            model,
        ]
    point = body.get("operating_point") or {}
    scale = body.get("scale") or {}
    lines = [
        f"{image.name} ({body.get('data') or origin}): score {_num(body.get('score'))} "
        f"({body.get('aggregation', 'max tile probability')}) -> "
        f"{str(body.get('label', '?')).upper()}",
        f"operating point: threshold {_num(body.get('threshold'))}"
        + (f" ({point['method']})" if point.get("method") else ""),
        f"{model}; {body.get('tiles_scored', '?')} tiles scored",
        f"pixel spacing: {scale.get('pixel_spacing_mm', '?')} mm/px "
        f"({scale.get('spacing_source', '?')})",
    ]
    regions = body.get("regions") or []
    if regions:
        lines.append("top regions (x0,y0 - x1,y1 in the image's pixels, probability):")
        lines += [
            f"  {r.get('rank', i + 1)}. {r.get('x0')},{r.get('y0')} - {r.get('x1')},"
            f"{r.get('y1')}  p={_num(r.get('probability'))}"
            for i, r in enumerate(regions[:5])
        ]
    if body.get("heatmap_written_to"):
        lines.append(f"heatmap: {body['heatmap_written_to']}")
    return lines


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"


def assumed_spacing_warning(body: object, image: Path) -> str | None:
    """A loud line when ``/analyze`` assumed the pixel spacing (the file carries none and
    none was given): a film at another scale is analysed at the wrong size without it."""
    scale = body.get("scale") if isinstance(body, dict) else None
    if not isinstance(scale, dict) or scale.get("spacing_source") != "default":
        return None
    return (
        f"WARNING: {image.name} carries no pixel spacing and --pixel-spacing-mm was not given: "
        f"it was analysed as {scale.get('pixel_spacing_mm')} mm/px (the training scale). A film "
        "at another scale (MIAS 0.2 mm/px, CBIS-DDSM scans about 0.05) is analysed at the wrong "
        "size: pass --pixel-spacing-mm."
    )


def is_whole_image(data: bytes, name: str) -> bool:
    """Whether an image file is a whole mammogram rather than a tile (from its header), by the
    service's own rule (:func:`mammo_pipeline.serving.image_io.is_whole_film`)."""
    from mammo_pipeline.serving.image_io import is_whole_film, peek_size

    try:
        width, height = peek_size(data, max_pixels=1 << 40, dicom=name.lower().endswith(".dcm"))
    except MammoError:
        return False  # the service names the problem
    return is_whole_film(width, height)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name in the same folder."""
    from mammo_pipeline.common.files import write_bytes_atomic

    write_bytes_atomic(path, data)


def error_message(resp: object) -> str:
    """The ``error`` text of a service answer (BentoML wraps it in a list)."""
    try:
        body = resp.json()  # type: ignore[attr-defined]
    except ValueError:
        return str(getattr(resp, "text", ""))[:300]
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:300]
