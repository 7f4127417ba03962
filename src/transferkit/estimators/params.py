"""scikit-learn's parameter protocol over a RunConfig, shared by every estimator."""

from __future__ import annotations

from typing import Any

from transferkit.config import RunConfig


class ConfiguredEstimator:
    """scikit-learn's parameter protocol over a :class:`RunConfig` (shared by the image and text classifiers)."""

    config: RunConfig

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: v for k, v in self.config.to_dict().items() if k != "data"}

    def set_params(self, **params: Any) -> "ConfiguredEstimator":
        self.config = self.config.replace(**params)
        return self

    def __repr__(self) -> str:
        defaults = RunConfig().to_dict()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"
