"""Help text for people: metavars without type placeholders, one-line command summaries,
and one-line errors for missing input files.

Typer prints a parameter's Python type as its placeholder (``<bool>`` for a flag,
``<list[Path]>``, ``{image}`` in the usage line) and keeps a docstring's hard line breaks in
the command list. :class:`MammoGroup` (the top-level group) fills every parameter that has
no metavar with click's usual words (``INTEGER``, ``FILE``, ``IMAGE``; nothing for a flag)
and gives every command a one-line summary, once, on the whole command tree, when a
command is looked up or the help is printed.
"""

from __future__ import annotations

from pathlib import Path

from typer._click import Context, HelpFormatter
from typer.core import TyperArgument, TyperGroup, TyperOption

from mammo_pipeline.errors import MammoError

_TYPE_WORDS = {int: "INTEGER", float: "NUMBER", str: "TEXT", bool: "BOOLEAN"}


def _value_word(param: TyperOption | TyperArgument) -> str:
    """What a value of ``param`` is, in one upper-case word (``FILE``, ``INTEGER``...)."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices or ())
    if desc.is_path:
        return {"file": "FILE", "directory": "DIR"}.get(str(desc.path_type), "PATH")
    annotation = desc.annotation
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is list and args:
        annotation = args[0]
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return _TYPE_WORDS.get(annotation, "VALUE")


def _plain_usage(param: TyperArgument) -> str:
    """An argument in the usage line as click writes it: ``IMAGE``, ``[PATHS]...``."""
    name = str(param.metavar)
    return name if param.required else f"[{name}]"


def tidy(command: object, ctx: Context | None = None) -> None:
    """Fill metavars and one-line summaries on ``command`` and everything under it."""
    if getattr(command, "_mammo_tidy", False):
        return
    command._mammo_tidy = True  # type: ignore[attr-defined]
    params = list(getattr(command, "params", []))
    if ctx is not None and (help_option := command.get_help_option(ctx)) is not None:
        params.append(help_option)
    for param in params:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperOption):
            param.metavar = "" if (param.is_flag or param.count) else _value_word(param)
        elif isinstance(param, TyperArgument):  # its own name, as the usage line shows it
            param.metavar = (param.name or "arg").upper() + ("..." if param.nargs != 1 else "")
            # typer writes "{IMAGE}" in the usage line and "<list[Path]>" beside the name
            param._usage_display_name = lambda p=param: _plain_usage(p)
            param.display_type_rich = lambda ctx, p=param: _value_word(p)
    if command.help and command.short_help is None:
        first = command.help.strip().split("\n\n", 1)[0]
        command.short_help = " ".join(first.split())
    for sub in getattr(command, "commands", {}).values():
        tidy(sub, ctx)


class MammoGroup(TyperGroup):
    """The ``mammo`` group: its command tree is tidied (see the module docstring)."""

    def get_command(self, ctx: Context, cmd_name: str) -> object:
        tidy(self, ctx)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        tidy(self, ctx)
        super().format_help(ctx, formatter)


def require_file(path: Path) -> Path:
    """``path`` if it is a readable file; else a one-line error naming it."""
    if path.is_dir():
        raise MammoError(f"{path}: is a directory, not a file")
    if not path.exists():
        raise MammoError(f"{path}: no such file")
    return path
