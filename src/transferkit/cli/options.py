"""Options commands share: one option per RunConfig field a command reads, generated from the field (its type,
help, panel and choices), so a new field is a new option without an edit in the commands."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from transferkit.config import FIELD_TYPES, RunConfig, choices


CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
# the DATA argument of the commands that read a labelled set whole (audit, auto)
LabelledDataArgument = Annotated[Path, typer.Argument(help="Labelled data: an image folder (train/<class>/* with optional "
                                                   "val/ and test/, or <class>/*) or a .csv/.tsv/.jsonl table",
                                              show_default=False)]


def option_name(field: dataclasses.Field) -> str:
    """``--val-fraction``; ``--no-cache`` for a flag that is on by default; a list field names its repeatable
    option in its metadata (``--method``)."""
    if field.metadata["option"]:
        return field.metadata["option"]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def option_help(field: dataclasses.Field) -> str:
    """The field's help as it reads for the option shown: a flag that is on by default shows as ``--no-NAME``,
    whose help says that it turns the setting off."""
    values = choices(FIELD_TYPES[field.name])
    text = field.metadata["help"] + (f"; one of: {', '.join(values)}" if values else "")
    if option_name(field).startswith("--no-"):  # the flag turns off what the field's help describes
        return f"Turn off (on by default): {text[:1].lower() + text[1:] if text[1:2].islower() else text}"
    if isinstance(field.default, bool):
        return f"{text} (default: {'on' if field.default else 'off'})"
    if field.default not in (None, dataclasses.MISSING):  # null defaults say what they mean in the help
        return f"{text} (default: {field.default})"
    return text


def cli_type(hint: Any) -> Any:
    """The option's type: the field's type without ``None`` (unset is ``None`` for every option)."""
    args = typing.get_args(hint)
    if type(None) in args:
        (hint,) = (arg for arg in args if arg is not type(None))
    return Optional[hint]


def config_option(field: dataclasses.Field) -> inspect.Parameter:
    hint, name = FIELD_TYPES[field.name], option_name(field)
    info: dict[str, Any] = {"help": option_help(field), "rich_help_panel": field.metadata["panel"],
                            "show_default": False}
    if hint is bool and field.default is True:
        info["callback"] = switch_off
    elif choices(hint):  # the choices are in the help, where they wrap between words
        info["metavar"] = "<choice>"
    elif typing.get_origin(hint) is list:
        info["metavar"] = "<spec>"
    # Typer's older spelling (the option as the default) builds faster than Annotated[...], ~50 of them per start
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, name, **info),
                             annotation=cli_type(hint))


def switch_off(given: bool | None) -> bool | None:
    """``--no-cache`` given sets ``cache`` to False; not given, the field keeps --config's value."""
    return False if given else None


def with_config_options(fields: Sequence[str]) -> Callable[[Any], Any]:
    """A decorator: ``command``'s own parameters, then one option per RunConfig field named in ``fields``
    (they reach the command through its ``**settings``)."""
    def decorate(command: Any) -> Any:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = [config_option(CONFIG_FIELDS[name]) for name in fields]
        command.__signature__ = inspect.Signature([*own, *generated], return_annotation=None)
        return command
    return decorate
