"""Named, pluggable parts (adapters, loss terms, callbacks) chosen by a spec string ``name:key=value,...``.

A registry is torch-free: built-in entries are :class:`Plugin` declarations, a ``"module:attribute"`` reference
imported only when one is created and the type and range of each option (transferkit/bounds.py), so
``--help`` and config validation list and check names and options without importing torch. Code outside the
package (a test, a user's plug-in) adds entries with :meth:`Registry.register` (with ``options`` to have
them checked too).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable

from transferkit.bounds import Bound
from transferkit.errors import TransferkitError, shown


@dataclass(frozen=True)
class Plugin:
    """A built-in part: where it lives (``"module:attribute"``) and the bound of each option it takes."""

    ref: str
    options: dict[str, Bound] = field(default_factory=dict)


def plugin(ref: str, **options: Bound) -> Plugin:
    return Plugin(ref, options)


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"lora:r=8,alpha=16"`` -> ``("lora", {"r": "8", "alpha": "16"})``: the options as typed."""
    name, _, rest = str(spec).strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TransferkitError(f"{shown(spec)}: expected name:key=value,key=value (got {shown(item)})")
        options[key.strip()] = value.strip()
    return name.strip(), options


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lora:r=8,alpha=16"`` -> ``("lora", {"r": 8, "alpha": 16})``; values become int, float or bool when
    they read as one."""
    name, options = split_spec(spec)
    return name, {key: parse_value(value) for key, value in options.items()}


def format_spec(name: str, options: dict[str, Any]) -> str:
    """The spec :func:`parse_spec` reads back as ``(name, options)``; a value it would read otherwise (one with a
    comma, or a string that reads as a number, like study ``007``) is a one-line error, never a silent change."""
    for key, value in options.items():
        read = parse_value(str(value))
        if "," in str(value) or read != value or type(read) is not type(value):
            raise TransferkitError(f"{key} {value!r} cannot be passed on in a spec (name:key=value,...): it would "
                                   "read back as another value; choose one without commas that does not read as a "
                                   "number or true/false")
    return f"{name}:" + ",".join(f"{key}={value}" for key, value in options.items())


def parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


class Registry:
    """Names -> factories for one kind of part (``kind`` names it in messages)."""

    def __init__(self, kind: str, builtins: dict[str, Plugin]) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = {name: entry.ref for name, entry in builtins.items()}
        self._options: dict[str, dict[str, Bound] | None] = {name: entry.options for name, entry in builtins.items()}

    def register(self, name: str, factory: Callable[..., Any], replace: bool = False,
                 options: dict[str, Bound] | None = None) -> None:
        """Add a part; with ``options`` (name -> :class:`~transferkit.bounds.Bound`) its spec's options are
        checked as the built-ins' are, else they pass to ``factory`` as :func:`parse_value` reads them."""
        if name in self._entries and not replace:
            raise TransferkitError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = factory
        self._options[name] = options

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._options.pop(name, None)

    def options(self, name: str) -> dict[str, Bound] | None:
        """The declared options of a registered part (None: a plug-in registered without them)."""
        return self._options.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, spec: str) -> tuple[str, dict[str, Any]]:
        """The parsed spec, its options typed and in range, or a one-line error naming close matches, the
        option or the range (no import happens here)."""
        name, options = split_spec(spec)
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            known = f"choose one of: {', '.join(self.names())}" if self.names() else f"no {self.kind} is registered yet"
            raise TransferkitError(f"{self.kind} {shown(name)} is not known; {hint}{known}")
        return name, self.check_options(name, options)

    def check_options(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` (as typed, or values read from a file) of the part ``name``, each read by its bound."""
        declared = self._options.get(name)
        if declared is None:
            return {key: parse_value(value) if isinstance(value, str) else value for key, value in options.items()}
        what = f"{self.kind} {name}: "
        for key in options:
            if key not in declared:
                takes = f"its options: {', '.join(declared)}" if declared else "it takes no options"
                raise TransferkitError(f"{what}no option {shown(key)}; {takes}")
        missing = [key for key, bound in declared.items() if bound.required and key not in options]
        if missing:
            raise TransferkitError(f"{what}{missing[0]}= is required ({declared[missing[0]].describe()})")
        return {key: declared[key].read(key, value, what) for key, value in options.items()}

    def factory(self, name: str) -> Callable[..., Any]:
        entry = self._entries[name]
        return load_ref(entry) if isinstance(entry, str) else entry

    def create(self, spec: str) -> Any:
        """Build the part a spec names, passing its options as keyword arguments."""
        name, options = self.check(spec)
        factory = self.factory(name)
        try:
            return factory(**options)
        except TypeError as exc:
            raise TransferkitError(f"{self.kind} '{spec}': {exc}") from None


def load_ref(ref: str) -> Any:
    """The object a lazy ``"module:attribute"`` reference names (imported on first use, not at registration)."""
    module, _, attribute = ref.partition(":")
    return getattr(import_module(module), attribute)
