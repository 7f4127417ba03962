"""transferkit audit: each check on tiny data where the answer is planted (a flipped label, an exact and a
near-duplicate leaking into test, a blank image, a text row copied into test), the exclusions file that
``train --exclude`` reads, the page in a real browser, and the refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA, run_main
from transferkit.audit.duplicates import exact_pairs, scan
from transferkit.audit.outliers import far_out
from transferkit.audit.kinds import excluded
from transferkit.audit.run import audit
from transferkit.errors import TransferkitError

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
SETTINGS = {"image_size": 64, "engine": "onnx"}


def real_images(folder: Path, count: int, skip: int = 0) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[skip:skip + count]


# three classes of real images a probe tells apart at 64 px: hymenoptera's ants, CIFAR-10's cars, MNIST's sevens
SOURCES = {"ant": SHARED_DATA / "hymenoptera_data" / "train" / "ants",
           "car": SHARED_DATA / "cifar10" / "train" / "automobile",
           "seven": SHARED_DATA / "digits_mnist_usps" / "mnist" / "7"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit") / "data"
    for name, source in SOURCES.items():
        for split, (count, skip) in (("train", (14, 0)), ("test", (4, 14))):
            for path in real_images(source, count, skip):
                target = root / split / name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
    car = real_images(SOURCES["car"], 1, 30)[0]
    shutil.copy(car, root / "train" / "seven" / "flipped.jpg")  # a car labelled seven
    ant = real_images(SOURCES["ant"], 1, 3)[0]
    shutil.copy(ant, root / "test" / "ant" / "exact_copy.jpg")
    near = Image.open(ant).convert("RGB")
    near = near.crop((5, 5, near.width - 5, near.height - 5)).resize((near.width // 2, near.height // 2))
    near.save(root / "test" / "ant" / "near_copy.jpg", "JPEG", quality=80)  # cropped, halved, recompressed
    Image.new("RGB", (64, 64), (128, 128, 128)).save(root / "train" / "car" / "blank.png")
    return root


@pytest.fixture(scope="module")
def result(planted: Path, session_cache: Path) -> dict:
    return audit(planted, **SETTINGS, cache_dir=str(session_cache))


def named(records: list[dict], key: str = "item") -> list[str]:
    return [Path(r[key]).name for r in records]


def test_flipped_label_is_flagged_with_its_true_class(result: dict) -> None:
    flagged = {Path(i["item"]).name: i for i in result["label_issues"]}
    assert "flipped.jpg" in flagged, result["label_issues"]
    assert (flagged["flipped.jpg"]["given"], flagged["flipped.jpg"]["suggested"]) == ("seven", "car")
    assert len(flagged) <= 3, f"too many clean items flagged: {sorted(flagged)}"


def test_exact_and_near_copies_leaking_into_test_are_found(result: dict) -> None:
    original = real_images(SOURCES["ant"], 1, 3)[0].name
    pairs = {tuple(sorted(Path(p).name for p in pair["items"])): pair for pair in result["duplicates"]}
    exact = pairs[tuple(sorted((original, "exact_copy.jpg")))]
    assert exact["exact"] and exact["kind"] == "leak"
    near = pairs[tuple(sorted((original, "near_copy.jpg")))]
    assert not near["exact"] and near["kind"] == "leak" and near["similarity"] >= 0.85
    assert len(pairs) <= 4, f"distinct images paired: {sorted(pairs)}"


def test_blank_image_is_an_item_issue_and_exclusions_never_name_test_items(result: dict, planted: Path) -> None:
    assert [(Path(c["item"]).name, c["kind"]) for c in result["item_issues"]] == [("blank.png", "blank")]
    kinds = {(Path(e["item"]).name, e["kind"]) for e in result["exclusions"]}
    original = real_images(SOURCES["ant"], 1, 3)[0].name
    assert {("flipped.jpg", "label"), ("blank.png", "blank"), (original, "leak")} <= kinds  # a leak's training copy
    assert not {name for name, _ in kinds} & {"exact_copy.jpg", "near_copy.jpg"}
    assert all(str(planted / "test") not in e["item"] for e in result["exclusions"])
    # by default what harms training: the wrong label and the blank image, not the leak's (correct) training copy
    default = {Path(item).name for item in excluded(result)}
    assert {"flipped.jpg", "blank.png"} <= default and original not in default
    assert [Path(item).name for item in excluded(result, ["leak"])] == [original]
    with pytest.raises(TransferkitError, match="choose from label, doubtful, conflicting"):
        excluded(result, ["label", "outlier"])


def test_doubtful_labels_are_left_out_by_default_and_on_request_only_the_flags() -> None:
    from transferkit.audit.run import exclusions

    def label(item: str, split: str) -> dict:
        return {"item": item, "split": split, "given": "cat", "suggested": "dog", "quality": 0.03}

    result = {"label_issues": [label("a.png", "train")], "doubtful_labels": [label("b.png", "val"),
                                                                             label("c.png", "test")],
              "duplicates": [], "item_issues": []}
    result["exclusions"] = exclusions(result)
    assert [(e["item"], e["kind"]) for e in result["exclusions"]] == [("a.png", "label"), ("b.png", "doubtful")]
    assert excluded(result) == ["a.png", "b.png"]  # test items never: they are scored, not trained on
    assert excluded(result, ["label"]) == ["a.png"]


def test_balance_and_sizes(result: dict) -> None:
    per_class = result["balance"]["per_class"]
    assert per_class["seven"] == {"train": 15, "val": 0, "test": 4} and per_class["ant"]["test"] == 6
    assert result["sizes"]["min_side"] == 28 and result["sizes"]["max_side"] > 300


def test_near_duplicates_and_outliers_on_features() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 128))
    features = (centres[rng.integers(0, 5, 300)] + rng.normal(0, 1.0, (300, 128))).astype(np.float32)
    features[7] = features[200] + rng.normal(0, 0.02, 128)  # a near copy
    features[50] = 3 * rng.normal(size=128)  # in no cluster
    neighbours = scan(features, k=5)
    assert [(p.first, p.second) for p in neighbours.pairs] == [(7, 200)]
    flagged = far_out(1 - neighbours.similarity.mean(axis=1))
    assert flagged.tolist()[:1] == [50] and len(flagged) <= 6
    assert [(p.first, p.second) for p in exact_pairs(["a", "b", None, "a", None, "a"])] == [(0, 3), (0, 5)]


def test_cli_page_exclusions_and_train_exclude(planted: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    page, listing = tmp_path / "audit.html", tmp_path / "exclusions.txt"
    code, out, err = run_main(monkeypatch, capsys, "audit", planted, "--image-size", "64", "--engine", "onnx",
                              "--out", page, "--exclusions", listing)
    assert code == 0, err
    assert "flipped.jpg" in out and "leak (exact)" in out
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") >= 6 and "flipped.jpg" in html
    names = [line for line in listing.read_text().splitlines() if not line.startswith("#")]
    assert any(n.endswith("flipped.jpg") for n in names) and not any("/test/" in n for n in names)
    assert not any(n.endswith(real_images(SOURCES["ant"], 1, 3)[0].name) for n in names)  # a leak: not by default

    code, out, err = run_main(monkeypatch, capsys, "train", planted, "--image-size", "64", "--engine", "onnx",
                              "--exclude", listing, "--out", tmp_path / "run")
    assert code == 0, err
    assert f"left out {len(names)} of the {len(names)} item(s)" in err

    code, out, err = run_main(monkeypatch, capsys, "audit", planted, "--image-size", "64", "--engine", "onnx",
                              "--exclusions", tmp_path / "leaks.txt", "--exclude-kinds", "leak")
    assert code == 0, err
    leaks = [line for line in (tmp_path / "leaks.txt").read_text().splitlines() if not line.startswith("#")]
    assert [Path(n).name for n in leaks] == [real_images(SOURCES["ant"], 1, 3)[0].name]
    code, out, err = run_main(monkeypatch, capsys, "audit", planted, "--exclude-kinds", "label,outliers")
    assert code == 2 and err.count("error:") == 1 and "--exclude-kinds outliers" in err and "Traceback" not in err

    (tmp_path / "notes.html").write_text("<html>my notes</html>")
    for option, target in (("--out", tmp_path / "notes.html"), ("--exclusions", tmp_path / "notes.html")):
        code, out, err = run_main(monkeypatch, capsys, "audit", planted, option, target)
        assert code == 2 and err.count("error:") == 1 and "not" in err and "Traceback" not in err
    assert (tmp_path / "notes.html").read_text() == "<html>my notes</html>"


def test_text_rows_copied_into_test_and_a_flipped_label(tmp_path: Path, session_cache: Path) -> None:
    good = ["a wonderful warm film", "a delightful and moving story", "brilliant joyful acting throughout",
            "a lovely charming tale for everyone", "superb touching performances", "an uplifting beautiful movie",
            "the best comedy I have seen this year", "gorgeous music and a clever script", "I loved every minute",
            "a triumph of direction", "tender funny and wise", "a masterpiece that deserves every award"]
    bad = ["a dull tedious film", "a boring lifeless story", "awful clumsy acting throughout",
           "a dreary tiresome tale for nobody", "terrible wooden performances", "a miserable ugly movie",
           "the worst comedy I have seen this year", "noisy music and a stupid script", "I hated every minute",
           "a disaster of direction", "cold unfunny and dumb", "a mess that deserves no audience"]
    rows = [(text, "pos") for text in good] + [(text, "neg") for text in bad]
    rows.append(("an awful boring dreadful film and the worst of all", "pos"))  # flipped
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    test = tmp_path / "test.csv"
    test.write_text(f"text,label\n{good[0]},pos\nsomething else entirely,neg\n")
    result = audit(train, test_data=str(test), max_length=16, engine="onnx", cache_dir=str(session_cache))
    assert result["modality"] == "text"
    assert f"{train.resolve()}:{len(rows) + 1}" in [i["item"] for i in result["label_issues"]]
    leak = [p for p in result["duplicates"] if p["exact"]]
    assert [p["items"] for p in leak] == [[f"{train.resolve()}:2", f"{test.resolve()}:2"]]
    assert result["texts"][f"{test.resolve()}:2"] == good[0]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_page_renders_its_thumbnails_in_headless_chromium(result: dict, tmp_path: Path) -> None:
    from transferkit.audit.page import write_page

    page = write_page(result, tmp_path / "audit.html").read_text()
    shown = page.count("<img")
    assert shown >= 6
    # the same page, with a script that counts the thumbnails the browser decoded once it has loaded
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>addEventListener('load',()=>{const i=[...document.images];"
                                             "document.body.setAttribute('data-drawn',i.filter(x=>x.complete&&"
                                             "x.naturalWidth>0).length)})</script></body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    assert f'data-drawn="{shown}"' in dom, dom[:300]
    assert "Label issues (" in dom and "Duplicates and leaks (" in dom


def test_a_resized_cropped_recompressed_copy_correlates_and_a_look_alike_does_not(tmp_path: Path, monkeypatch) -> None:
    from transferkit.audit.checks import image_facts
    from transferkit.audit.copies import COPY_CORRELATION, copy_correlation, near_copies

    cars = real_images(SOURCES["car"], 40)
    original = Image.open(cars[0]).convert("RGB")
    copies = []
    for k, (scale, cut, quality) in enumerate(((0.5, 0.1, 60), (2.0, 0.06, 95), (1.3, 0.0, 70))):
        w, h = original.size
        image = original.crop((0, round(cut * h), round((1 - cut) * w), h))  # cut from the top and right
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        image.save(tmp_path / f"copy{k}.jpg", "JPEG", quality=quality)
        copies.append(tmp_path / f"copy{k}.jpg")
    thumbnails = np.stack([image_facts(str(p))[2] for p in [cars[0], *copies, *cars[1:]]])
    n = len(thumbnails)
    scores = copy_correlation(thumbnails, np.zeros(n - 1, dtype=np.int64), np.arange(1, n))
    assert (scores[:3] >= COPY_CORRELATION).all(), scores[:3]
    assert (scores[3:] < COPY_CORRELATION).all(), scores[3:].max()  # 39 other cars, some alike in layout
    # past the memory for every image's crops at once, each chunk of pairs makes its own: the same scores
    monkeypatch.setattr("transferkit.audit.copies.BANK_BYTES", 0)
    monkeypatch.setattr("transferkit.audit.copies.CHUNK", 7)
    np.testing.assert_allclose(copy_correlation(thumbnails, np.zeros(n - 1, dtype=np.int64), np.arange(1, n)),
                               scores, atol=1e-6)
    monkeypatch.undo()
    # two images, one nearest other each (the audit of a tiny set): the pair is still compared
    pair = near_copies(thumbnails[:2], np.array([[1], [0]]), lambda i, j: False)
    assert [(p.first, p.second) for p in pair] == [(0, 1)]


def test_label_issues_are_the_flags_the_probe_is_sure_of() -> None:
    from transferkit.audit.labels import find_label_issues

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    # the probe's probability of each given label: sure and right of the rest, so that calibration keeps them
    given = np.clip(rng.normal(0.98, 0.01, 200), 0.95, 0.995)
    given[[3, 150]] = 0.03  # two wrong labels the probe is sure of
    given[[10, 20, 160]] = 0.35  # three hard items: confident learning flags them too
    proba = np.where(np.eye(2, dtype=bool)[labels], given[:, None], 1 - given[:, None])
    flagged, doubtful = find_label_issues(labels, proba)
    found = {issue.index: issue for issue in flagged}
    assert sorted(found) == [3, 150]
    assert (found[3].given, found[3].suggested) == (0, 1)
    assert doubtful == []  # of two classes the flags' line and the doubt's are one: 1/K^2 = 1/(2K)


def test_labels_the_probe_only_doubts_are_kept_apart_from_the_flags() -> None:
    from transferkit.audit.labels import find_label_issues

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 40)
    given = np.clip(rng.normal(0.7, 0.02, 400), 0.65, 0.75)  # the probability of each given label
    given[[5, 200]] = 0.002  # wrong labels the probe is sure of
    given[[50, 300]] = 0.25  # labels it doubts: calibrated, between 1/K^2 and 1/(2K)
    given[[100, 250]] = 0.5  # hard items, their label still the likeliest
    proba = np.zeros((400, 10))
    proba[np.arange(400), labels] = given
    proba[np.arange(400), (labels + 1) % 10] = (1 - given) * 0.95  # most of the rest on the next class
    proba += ((1 - proba.sum(axis=1)) / 8)[:, None] * (proba == 0)
    flagged, doubtful = find_label_issues(labels, proba)
    assert sorted(i.index for i in flagged) == [5, 200]
    assert sorted(i.index for i in doubtful) == [50, 300]
    assert all(0.01 <= i.quality < 0.05 and i.suggested == (i.given + 1) % 10 for i in doubtful)


def test_calibration_finds_the_temperature_the_labels_were_drawn_at() -> None:
    from transferkit.audit.labels import calibrated
    from transferkit.heads.probe import softmax

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    truth = softmax(logits / 2.0)  # an over-confident probe: the labels follow its logits at temperature 2
    labels = np.asarray([rng.choice(5, p=row) for row in truth])
    out = calibrated(softmax(logits), labels)
    assert np.abs(out - truth).max() < 0.05
    assert (out.argmax(axis=1) == logits.argmax(axis=1)).all()
