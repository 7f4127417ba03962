"""Options commands share: one option per RunConfig field a command reads, generated from the field (its type,
help, panel and choices), so a new field is a new option without an edit in the commands."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from transferkit.cli.train import CONFIG_FIELDS, config_option


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
