"""transferkit: turn a pretrained model into a model for your data.

Public names are imported lazily so ``import transferkit`` (and the CLI) start fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AutoClassifier", "ImageClassifier", "auto", "RunConfig", "TextClassifier", "TransferClassifier", "classifier_for_data",
           "load_classifier", "DomainAdaptClassifier"]

_LAZY = {"auto": "automl.run", "AutoClassifier": "automl.estimator", "ImageClassifier": "estimators.image", "RunConfig": "config", "TextClassifier": "estimators.text",
         "TransferClassifier": "estimators.core", "classifier_for_data": "estimators",
         "load_classifier": "estimators", "DomainAdaptClassifier": "adapt.estimator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
