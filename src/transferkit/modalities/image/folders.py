"""Image folders: ``<root>/train/<class>/*`` (+ optional ``val/``, ``test/``) or ``<root>/<class>/*``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from transferkit.errors import DataError
from transferkit.modalities.base import LabelledData, Split, stratified_indices
from transferkit.modalities.image.images import is_image_file

VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test",)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_split(folder: Path, ignored: list[str]) -> dict[str, list[str]]:
    """Map class name -> sorted image files (recursively) of one split folder."""
    classes = _class_dirs(folder)
    if not classes:
        stray = [f.name for f in folder.iterdir() if f.is_file()][:3]
        hint = f" (it holds files such as {', '.join(stray)}: put them in one folder per class)" if stray else ""
        raise DataError(f"{folder}: no class folders found; expected {folder}/<class>/<image files>{hint}")
    found = {}
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        images = [str(p) for p in files if is_image_file(p)]
        ignored.extend(str(p) for p in files if not is_image_file(p) and not p.name.startswith("."))
        found[class_dir.name] = images
    return found


def find_split_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def load_image_folder(root: str | Path, val_fraction: float = 0.2, seed: int = 0) -> LabelledData:
    """Scan and validate an image folder; split train/val (stratified, seeded) when there is no val folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; pass a folder with <class>/ or train/<class>/ sub-folders")
    ignored: list[str] = []
    train_dir = find_split_dir(root, ("train",))
    layout_root = train_dir or root
    train_files = _scan_split(layout_root, ignored)
    for name, files in train_files.items():
        if not files:
            raise DataError(f"{layout_root / name}: class folder '{name}' has no image files; add images or remove it")
    classes = sorted(train_files)
    if len(classes) < 2:
        raise DataError(f"{layout_root}: only one class ('{classes[0]}') found; a classifier needs at least 2")
    index = {name: i for i, name in enumerate(classes)}
    train = _labelled(train_files, index)

    def other(names: tuple[str, ...]) -> Split:
        folder = find_split_dir(root, names) if train_dir else None
        if folder is None:
            return Split()
        files = _scan_split(folder, ignored)
        unknown = [c for c in files if c not in index and files[c]]
        if unknown:
            raise DataError(f"{folder / unknown[0]}: class '{unknown[0]}' is in {folder.name}/ but not in train/; "
                            "add training images for it or remove the folder")
        return _labelled(files, index)

    val, test = other(VAL_NAMES), other(TEST_NAMES)
    val_source = "folder"
    if not len(val) and val_fraction > 0:
        train, val = stratified_split(train, classes, val_fraction, seed)
        val_source = f"{val_fraction:g} of train, stratified, seed {seed}"
    elif not len(val):
        val_source = "none"
    return LabelledData(classes, train, val, test, val_source, held_out=val_source == "folder", ignored=ignored)


def stratified_split(split: Split, classes: list[str], fraction: float, seed: int) -> tuple[Split, Split]:
    if not 0 < fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {fraction}")
    counts = Counter(split.labels)
    too_small = [classes[c] for c, n in sorted(counts.items()) if n < 2]
    if too_small:
        raise DataError(f"class '{too_small[0]}' has {counts[classes.index(too_small[0])]} image; a stratified "
                        "validation split needs at least 2 per class (or give a val/ folder)")
    train_idx, val_idx = stratified_indices(split.labels, fraction, seed)
    return split.take(train_idx), split.take(val_idx)


def list_image_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Expand files and folders (recursively) given to ``predict`` into image files, in a stable order."""
    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and is_image_file(p))
        elif path.is_file():
            files.append(str(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    if not files:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    return files


def labelled_split(folder: str | Path, classes: list[str]) -> Split:
    """A ``<class>/*`` folder as a split labelled by the fitted class order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass a folder with one sub-folder per class")
    files = _scan_split(folder, [])
    unknown = [c for c in files if c not in classes and files[c]]
    if unknown:
        raise DataError(f"{folder / unknown[0]}: class '{unknown[0]}' is not one the model knows ({', '.join(classes)})")
    split = _labelled(files, {c: i for i, c in enumerate(classes)})
    if not len(split):
        raise DataError(f"{folder}: no image files found")
    return split


def _labelled(files: dict[str, list[str]], index: dict[str, int]) -> Split:
    """The files of a scanned split folder, class by class in name order, labelled by ``index``."""
    return Split([p for c in sorted(files) for p in files[c]], [index[c] for c in sorted(files) for _ in files[c]])
