from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, FAST, make_folder, make_image
from transferkit.modalities.image.folders import load_image_folder
from transferkit.errors import DataError
from transferkit.modalities.image.images import load_rgb


def test_split_layout_and_auto_stratified_split(tmp_path: Path):
    data = load_image_folder(make_folder(tmp_path / "a", {"train": 5, "val": 2}))
    assert data.classes == ["blue", "red"] and len(data.train) == 10 and len(data.val) == 4
    flat = make_folder(tmp_path / "b", {"": 10})
    first, second = load_image_folder(flat, 0.2, seed=1), load_image_folder(flat, 0.2, seed=1)
    assert first.val.items == second.val.items and len(first.val) == 4
    assert sorted(first.val.labels) == [0, 0, 1, 1]  # stratified: 2 per class
    assert not set(first.val.items) & set(first.train.items)


def test_empty_class_single_class_and_unknown_val_class(tmp_path: Path):
    root = make_folder(tmp_path / "empty", {"train": 3})
    (root / "train" / "green").mkdir()
    with pytest.raises(DataError, match="green"):
        load_image_folder(root)
    single = make_folder(tmp_path / "single", {"train": 3}, {"cat": (1, 2, 3)})
    with pytest.raises(DataError, match="only one class"):
        load_image_folder(single)
    extra = make_folder(tmp_path / "extra", {"train": 3})
    make_image(extra / "val" / "green" / "x.png", (0, 200, 0))
    with pytest.raises(DataError, match="'green' is in val/ but not in train/"):
        load_image_folder(extra)
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nothing")


def test_non_image_extensions_are_listed_not_loaded(tmp_path: Path):
    root = make_folder(tmp_path / "d", {"train": 3, "val": 1})
    (root / "train" / "red" / "imageNotFound.gif").write_bytes(b"GIF89a")
    data = load_image_folder(root)
    assert any(p.endswith("imageNotFound.gif") for p in data.ignored)
    assert not any(p.endswith(".gif") for p in data.train.items)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_image_modes_become_rgb(tmp_path: Path, mode: str):
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert("RGBA" if mode == "LA" else "RGB")
    if mode == "I;16":
        image = Image.fromarray(array[..., 0].astype("<u2") * 200)
    else:
        image = image.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    loaded = load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)
    if mode == "I;16":  # 16-bit scaled by range, not clipped to white
        assert 0 < np.asarray(loaded).mean() < 250


def test_exif_orientation_is_honoured(tmp_path: Path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (20, 40)


def test_decompression_bomb_is_rejected(tmp_path: Path, monkeypatch):
    import transferkit.modalities.image.images as images

    make_image(tmp_path / "big.png", (0, 0, 0), size=64)
    monkeypatch.setattr(images.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Exception) as info:
        load_rgb(tmp_path / "big.png")
    assert "decompression" in str(info.value).lower() or "exceeds" in str(info.value).lower()


def test_unreadable_files_are_skipped_with_warning_or_fail_when_strict(tmp_path: Path, capsys):
    from transferkit import ImageClassifier

    root = make_folder(tmp_path / "d", {"train": 6, "val": 2})
    (root / "train" / "red" / "broken.jpg").write_bytes(b"not an image at all")
    truncated = (root / "train" / "blue" / "img_0.png").read_bytes()
    (root / "train" / "blue" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    clf = ImageClassifier(**FAST).fit(root)
    skipped = {Path(s["path"]).name for s in clf.metrics_["skipped_files"]}
    assert skipped == {"broken.jpg", "truncated.png"}
    assert "broken.jpg" in capsys.readouterr().err
    with pytest.raises(DataError, match="unreadable"):
        ImageClassifier(strict=True, **FAST).fit(root)


def test_too_few_images_for_a_stratified_split(tmp_path: Path):
    root = make_folder(tmp_path / "d", {"": 3})
    make_image(root / "green" / "only.png", (0, 200, 0))
    with pytest.raises(DataError, match="'green'"):
        load_image_folder(root, 0.2)
    assert set(COLOURS) <= set(load_image_folder(root, 0.0).classes)
