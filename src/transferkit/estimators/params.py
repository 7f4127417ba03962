"""scikit-learn's estimator protocol over a RunConfig, shared by every estimator: parameters, tags, clone.

scikit-learn is imported only inside ``__sklearn_tags__`` (which only scikit-learn calls): importing it costs
0.7 s of start-up that a probe served from the cache does not otherwise pay.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any, Sequence

from transferkit.config import RunConfig
from transferkit.errors import TransferkitError

PARAMETERS = tuple(f.name for f in fields(RunConfig) if f.name != "data")


def check_parameters(names: Sequence[str], owner: str) -> None:
    """One line naming an unknown parameter and its closest matches (``epoch`` -> ``epochs``)."""
    for name in names:
        if name not in PARAMETERS:
            close = difflib.get_close_matches(name, PARAMETERS, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise TransferkitError(f"{owner}: unknown parameter '{name}'; {hint}see {owner}().get_params() for "
                                   "all of them")


class ConfiguredEstimator:
    """``get_params`` / ``set_params`` over the config's fields (the same objects, as ``sklearn.clone``
    checks), classifier tags, and labels given as ``y`` returned in their own type."""

    config: RunConfig
    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this instead of tags

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in PARAMETERS}

    def set_params(self, **params: Any) -> "ConfiguredEstimator":
        check_parameters(list(params), type(self).__name__)
        self.config = self.config.replace(**params)
        return self

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        # Inputs are file paths, folders or texts (1-d, strings), not a numeric 2-d array; labels come from
        # ``y`` or from the data itself (class folders, a label column), so ``y`` is optional.
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=False),
                    classifier_tags=ClassifierTags(), non_deterministic=False,
                    input_tags=InputTags(one_d_array=True, two_d_array=False, string=True))

    def __repr__(self) -> str:
        defaults = RunConfig().to_dict()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


def typed_classes(names: Sequence[str], labels: Sequence[Any] | None) -> list[Any]:
    """Class names as the user's labels had them: ``y=[0, 1, ...]`` gives back ints, not "0" and "1"."""
    if labels is None:
        return list(names)
    originals: dict[str, Any] = {}
    for label in labels:
        value = label.item() if hasattr(label, "item") else label  # numpy scalars -> JSON-able Python values
        originals.setdefault(str(value).strip(), value)
    return [originals.get(name, name) for name in names]
