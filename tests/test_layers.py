"""Imports flow one way (README, Architecture): read from the sources' own import statements (those inside
functions and under TYPE_CHECKING too), so a lazy import cannot hide a dependency that runs back up a layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import transferkit

PACKAGE = Path(transferkit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every transferkit module ``source`` (the text of ``module``) imports; ``from transferkit.x import y``
    counts as x and x.y (y may be a module)."""
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "transferkit" or name.startswith("transferkit.")}


IMPORTS = {module_name(path): imported(path.read_text(), module_name(path), path.name == "__init__.py")
           for path in sorted(PACKAGE.rglob("*.py"))}


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def offenders(importers: str | tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """``importer -> imported`` for each import of a ``forbidden`` package by a module under ``importers``."""
    importers = (importers,) if isinstance(importers, str) else importers
    return sorted(f"{m} -> {i}" for m, names in IMPORTS.items() if under(m, *importers)
                  for i in names if under(i, *forbidden))


def test_the_import_reader_sees_lazy_typing_and_relative_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from transferkit.cli import app\n"
              "def f():\n    from transferkit.estimators import core\n    from ..adapt import estimator\n")
    assert imported(source, "transferkit.methods.x") == {
        "transferkit.cli", "transferkit.cli.app", "transferkit.estimators", "transferkit.estimators.core",
        "transferkit.adapt", "transferkit.adapt.estimator"}
    assert offenders("transferkit.estimators.finetune", ("transferkit.train",))  # a lazy import in the tree, found


def test_methods_are_plug_ins_that_import_no_application() -> None:
    assert offenders("transferkit.methods", ("transferkit.estimators", "transferkit.adapt", "transferkit.cli")) == []


def test_estimators_reach_methods_only_through_the_registries() -> None:
    assert offenders("transferkit.estimators", ("transferkit.methods", "transferkit.adapt", "transferkit.cli")) == []


@pytest.mark.parametrize("module", ["transferkit.config", "transferkit.registry", "transferkit.plugins",
                                    "transferkit.strategies", "transferkit.bounds"])
def test_the_torch_free_declarations_import_no_higher_layer(module: str) -> None:
    higher = ("transferkit.train", "transferkit.estimators", "transferkit.methods", "transferkit.features",
              "transferkit.modalities", "transferkit.cli", "transferkit.adapt")
    assert module in IMPORTS and offenders(module, higher) == []


def test_features_and_runs_do_not_import_each_other_back() -> None:
    assert offenders("transferkit.features", ("transferkit.runs",)) == []


def test_only_the_command_line_imports_the_command_line() -> None:
    found = sorted(f"{m} -> {i}" for m, names in IMPORTS.items() if not under(m, "transferkit.cli", "transferkit.__main__")
                   for i in names if under(i, "transferkit.cli"))
    assert found == []
