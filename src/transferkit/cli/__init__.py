"""The ``transferkit`` command line."""

from transferkit.cli.app import app, main

__all__ = ["app", "main"]
