"""`mammo keys init`: make the Ed25519 key pair that signs evaluations, gate decisions and
approvals (:mod:`mammo_pipeline.common.signing`)."""

from __future__ import annotations

from pathlib import Path

import typer

from mammo_pipeline.config import get_settings

app = typer.Typer(
    help="Signing keys: the private key signs evaluations, gate decisions and approvals (the "
    "Airflow workers); the public key is what the deployer and the service trust.",
    no_args_is_help=True,
)


@app.command("init")
def init(
    out: Path | None = typer.Option(
        None, "--out", help="folder for the pair (default: <data dir>/keys, the embedded default)"
    ),
    force: bool = typer.Option(
        False, "--force", help="replace an existing private key (what it signed stops verifying)"
    ),
) -> None:
    """Create mammo-signing.key (private, mode 0600) and mammo-signing.pub in a folder."""
    from mammo_pipeline.common.signing import default_key_dir, write_key_pair

    directory = out if out is not None else default_key_dir(get_settings())
    private, public, kid = write_key_pair(directory, overwrite=force)
    typer.echo(f"key {kid}")
    typer.echo(f"private key (workers that evaluate, gate, approve): {private}")
    typer.echo(f"public key  (deployer, service; trust several to rotate): {public}")
    typer.echo(f"  MAMMO_SIGNING_KEY={private.resolve()}")
    typer.echo(f"  MAMMO_TRUSTED_KEYS={public.resolve()}")
