"""Named, pluggable parts (adapters, loss terms, callbacks) chosen by a spec string ``name:key=value,...``.

A registry is torch-free: built-in entries are ``"module:attribute"`` references imported only when one is
created, so ``--help`` and config validation list and check names without importing torch. Code outside the
package (a test, a user's plug-in) adds entries with :meth:`Registry.register`.
"""

from __future__ import annotations

import difflib
from importlib import import_module
from typing import Any, Callable

from transferkit.errors import TransferkitError


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lora:r=8,alpha=16"`` -> ``("lora", {"r": 8, "alpha": 16})``; values become int, float or bool when
    they read as one."""
    name, _, rest = str(spec).strip().partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TransferkitError(f"'{spec}': expected name:key=value,key=value (got '{item}')")
        options[key.strip()] = parse_value(value.strip())
    return name.strip(), options


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

    def __init__(self, kind: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(builtins)

    def register(self, name: str, factory: Callable[..., Any], replace: bool = False) -> None:
        if name in self._entries and not replace:
            raise TransferkitError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = factory

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, spec: str) -> tuple[str, dict[str, Any]]:
        """The parsed spec, or a one-line error naming close matches (no import happens here)."""
        name, options = parse_spec(spec)
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            known = f"choose one of: {', '.join(self.names())}" if self.names() else f"no {self.kind} is registered yet"
            raise TransferkitError(f"{self.kind} '{name}' is not known; {hint}{known}")
        return name, options

    def factory(self, name: str) -> Callable[..., Any]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(import_module(module), attribute)
        return entry

    def create(self, spec: str) -> Any:
        """Build the part a spec names, passing its options as keyword arguments."""
        name, options = self.check(spec)
        factory = self.factory(name)
        try:
            return factory(**options)
        except TypeError as exc:
            raise TransferkitError(f"{self.kind} '{spec}': {exc}") from None
