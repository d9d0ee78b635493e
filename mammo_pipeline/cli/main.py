"""Entry point of the ``mammo`` command: registers each stage's commands, turns known errors
into one-line messages with a non-zero exit code (no traceback), and sets TensorFlow's log
level before anything can import it (:mod:`mammo_pipeline.cli.quiet`)."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from mammo_pipeline.cli import data as data_cli
from mammo_pipeline.cli import keys as keys_cli
from mammo_pipeline.cli import monitor as monitor_cli
from mammo_pipeline.cli import registry, serve, status, train, validate
from mammo_pipeline.cli.help import MammoGroup
from mammo_pipeline.cli.quiet import quiet_tensorflow_env
from mammo_pipeline.config import describe_validation_error
from mammo_pipeline.errors import MammoError

app = typer.Typer(
    name="mammo",
    cls=MammoGroup,
    help="mammo-mlops: validate, train, gate and serve the mammogram lesion classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(keys_cli.app, name="keys")  # mammo keys init
validate.register(app)  # mammo validate
train.register(app)  # mammo train, mammo evaluate
registry.register(app)  # mammo registry ...
serve.register(app)  # mammo deploy, mammo serve, mammo predict
status.register(app)  # mammo status
monitor_cli.register(app)  # mammo monitor report|status|feedback


def main() -> None:
    quiet_tensorflow_env()
    try:
        code = app(standalone_mode=False)  # click's errors come here: one line each, below
    except NoArgsIsHelpError:  # `mammo` or `mammo data` alone: the help was printed
        sys.exit(2)
    except UsageError as exc:  # an unknown command or option, a value of the wrong type
        where = exc.ctx.command_path if exc.ctx is not None else "mammo"
        typer.secho(
            f"error: {exc.format_message()} (see `{where} --help`)", fg=typer.colors.RED, err=True
        )
        sys.exit(exc.exit_code)
    except ClickException as exc:
        typer.secho(f"error: {exc.format_message()}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except MammoError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as exc:  # the settings (MAMMO_* / config file) are invalid
        typer.secho(f"error: {describe_validation_error(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # typer.Exit(n), e.g. `registry gate --strict`
        sys.exit(code)


if __name__ == "__main__":
    main()
