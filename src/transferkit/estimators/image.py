"""``ImageClassifier``: a pretrained image backbone plus a new head, fitted to an image folder."""

from __future__ import annotations

from typing import Any

from transferkit.estimators.core import TransferClassifier
from transferkit.modalities import IMAGE
from transferkit.modalities.image.backbones import DEFAULT_IMAGE_BACKBONE
from transferkit.modalities.image.features import FeatureSource

__all__ = ["ImageClassifier"]


class ImageClassifier(TransferClassifier):
    """A pretrained image backbone plus a new head, fitted to an image folder (``train/`` + optional
    ``val/`` and ``test/``, or one folder per class).

    >>> clf = ImageClassifier(backbone="efficientnet_lite0", strategy="linear-probe").fit("data")
    >>> clf.score("data/val"), clf.predict(["a.jpg"]), clf.predict_proba("some_folder/")
    """

    modality = IMAGE

    def __init__(self, backbone: str = DEFAULT_IMAGE_BACKBONE, strategy: str = "linear-probe", **params: Any) -> None:
        super().__init__(backbone, strategy, **params)

    @property
    def source_(self) -> FeatureSource:
        """The fitted feature network as the feature extractor sees it (fingerprint, preprocessing, builder)."""
        return FeatureSource(self.spec_.fingerprint, self.spec_.preprocessing, self.feature_net, self.spec_.name)
