"""Image folders: ``<root>/train/<class>/*`` (+ optional ``val/``, ``test/``) or ``<root>/<class>/*``.

Nothing is passed over without a word: files that are not images by extension, broken links and link loops,
images beside the class folders, and hidden or tool folders inside a class folder are each named in one
warning line and listed in the run's skipped files.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from transferkit.errors import DataError, not_found
from transferkit.modalities.base import LabelledData, Split, sort_classes, stratified_indices
from transferkit.modalities.image.images import is_image_file
from transferkit.progress import log

VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test",)
# Folders that tools leave beside the data (besides any hidden one, such as .ipynb_checkpoints or .git):
# their files are copies or metadata, never samples of the class they sit in.
TOOL_FOLDERS = frozenset({"__MACOSX", "__pycache__"})
SHOWN = 5  # names a warning lists before "..."


def is_tool_folder(name: str) -> bool:
    return name.startswith(".") or name in TOOL_FOLDERS


@dataclass
class FolderScan:
    """What scanning image folders passed over, kind by kind."""

    ignored: list[str] = field(default_factory=list)  # not images by extension (README.md, a .gif placeholder)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (path, why): dangling links, loops
    loose: list[str] = field(default_factory=list)  # image files beside the class folders
    tool_folders: list[str] = field(default_factory=list)  # hidden / tool folders inside class folders
    unused_folders: list[str] = field(default_factory=list)  # folders beside train/ that are no split

    def skipped(self) -> list[dict[str, Any]]:
        """Entries for the run's skipped files (the shape unreadable files have there)."""
        reasons = [*self.broken, *((p, "an image beside the class folders: in no class") for p in self.loose),
                   *((p, "a hidden or tool folder inside a class folder: not read") for p in self.tool_folders),
                   *((p, "a folder beside train/ that is no split: not read") for p in self.unused_folders)]
        return [{"item": path, "path": path, "reason": why} for path, why in reasons]

    def warn(self) -> None:
        """One warning line per kind of thing passed over, naming the first few."""
        kinds = [
            (self.ignored, ", ", "ignored {n} file(s) that are not images by extension: {names}"),
            ([f"{path} ({why})" for path, why in self.broken], "; ",
             "skipped {n} broken link(s) or unreadable folder(s): {names}"),
            (self.loose, ", ", "{n} image file(s) lie beside the class folders and are not used: {names}; "
                               "move each into its class folder"),
            (self.tool_folders, ", ", "skipped {n} hidden or tool folder(s) inside class folders (not part of "
                                      "any class): {names}"),
            (self.unused_folders, ", ", "{n} folder(s) beside train/ are not used (neither a split nor inside "
                                        "train/): {names}; move class folders into train/ (or val/, test/)"),
        ]
        for items, separator, message in kinds:
            if items:
                log("warning: " + message.format(n=len(items), names=listing(items, separator)))


def listing(items: list[str], separator: str = ", ") -> str:
    return separator.join(items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")


def _link_problem(path: Path) -> str:
    """Why a directory entry that is neither a file nor a folder was passed over."""
    try:
        os.stat(path)
    except OSError as exc:
        if path.is_symlink():
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            return f"dangling symbolic link to {os.readlink(path)}"
        return f"cannot read it ({exc.strerror})"
    return "not a regular file (a device, pipe or socket)"


def looks_like_text(item: str) -> bool:
    """An input that is words rather than a file name: spaces, and no file suffix ("a dog on a beach")."""
    return any(c.isspace() for c in item.strip()) and not Path(item).suffix


def walk_files(folder: Path, scan: FolderScan) -> list[Path]:
    """Files under ``folder``, sorted. Links to folders are followed, each real folder read once (so a link
    loop ends); hidden and tool folders are passed over; what cannot be read is noted in ``scan``."""
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            stat = current.stat()
            if (stat.st_dev, stat.st_ino) in seen:
                scan.broken.append((str(current), "link to a folder already read (a loop or a duplicate)"))
                continue
            seen.add((stat.st_dev, stat.st_ino))
            with os.scandir(current) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            scan.broken.append((str(current), f"cannot read folder ({exc.strerror or exc})"))
            continue
        real = current.resolve()
        for name in names:
            path = current / name
            if path.is_dir():  # follows links; False for a dangling link or a loop
                if is_tool_folder(name):
                    scan.tool_folders.append(str(path))
                elif path.is_symlink() and real.is_relative_to(path.resolve()):  # a link up: other classes
                    scan.broken.append((str(path), "symbolic link loop (to a folder that holds it)"))
                else:
                    stack.append(path)
            elif path.is_file():
                files.append(path)
            elif not name.startswith("."):
                scan.broken.append((str(path), _link_problem(path)))
    return sorted(files)


def _class_dirs(folder: Path, scan: FolderScan) -> list[Path]:
    dirs = []
    real = folder.resolve()
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if entry.is_symlink() and real.is_relative_to(entry.resolve()):
                scan.broken.append((str(entry), "symbolic link loop (to a folder that holds it)"))
            elif not is_tool_folder(entry.name):
                dirs.append(entry)
        elif entry.is_file():
            if is_image_file(entry):
                scan.loose.append(str(entry))
        elif not entry.name.startswith("."):
            scan.broken.append((str(entry), _link_problem(entry)))
    return dirs


def _scan_split(folder: Path, scan: FolderScan) -> dict[str, list[str]]:
    """Map class name -> sorted image files (recursively) of one split folder."""
    classes = _class_dirs(folder, scan)
    if not classes:
        stray = [f.name for f in folder.iterdir() if f.is_file()][:3]
        hint = f" (it holds files such as {', '.join(stray)}: put them in one folder per class)" if stray else ""
        raise DataError(f"{folder}: no class folders found; expected {folder}/<class>/<image files>{hint}")
    found = {}
    for class_dir in classes:
        files = walk_files(class_dir, scan)
        found[class_dir.name] = [str(p) for p in files if is_image_file(p)]
        scan.ignored.extend(str(p) for p in files if not is_image_file(p) and not p.name.startswith("."))
    return found


def find_split_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def load_image_folder(root: str | Path, val_fraction: float = 0.2, seed: int = 0) -> LabelledData:
    """Scan and validate an image folder; split train/val (stratified, seeded) when there is no val folder.
    What the scan passed over is warned about and listed in ``ignored`` / ``skipped``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {not_found(root, 'data folder')}; pass a folder with <class>/ or train/<class>/ "
                        "sub-folders")
    scan = FolderScan()
    train_dir = find_split_dir(root, ("train",))
    layout_root = train_dir or root
    train_files = _scan_split(layout_root, scan)
    for name, files in train_files.items():
        if not files:
            raise DataError(f"{layout_root / name}: class folder '{name}' has no image files; add images or remove it")
    classes = sorted(train_files)
    if len(classes) < 2:
        raise DataError(f"{layout_root}: only one class ('{classes[0]}') found; a classifier needs at least 2")
    index = {name: i for i, name in enumerate(classes)}
    train = _labelled(train_files, index)
    if train_dir:  # images and folders in the root beside train/ (and val/, test/) are in no split either
        splits = {train_dir, find_split_dir(root, VAL_NAMES), find_split_dir(root, TEST_NAMES)}
        for entry in sorted(root.iterdir()):
            if entry.is_file() and is_image_file(entry):
                scan.loose.append(str(entry))
            elif entry.is_dir() and entry not in splits and not is_tool_folder(entry.name):
                scan.unused_folders.append(str(entry))

    def other(names: tuple[str, ...]) -> Split:
        folder = find_split_dir(root, names) if train_dir else None
        if folder is None:
            return Split()
        files = _scan_split(folder, scan)
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
    scan.warn()
    return LabelledData(classes, train, val, test, val_source, held_out=val_source == "folder",
                        skipped=scan.skipped(), ignored=scan.ignored)


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
    scan = FolderScan()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(str(p) for p in walk_files(path, scan) if is_image_file(p))
        elif path.is_file():
            files.append(str(path))
        elif path.is_symlink() or os.path.exists(path):  # a device, a pipe, a socket, a broken link
            raise DataError(f"{path}: {_link_problem(path)}; pass an image file or a folder")
        elif looks_like_text(str(item)):
            raise DataError(f"{item}: no such file or folder; this run classifies images (pass image files or "
                            "folders), not texts: those need a run trained on text")
        else:
            raise DataError(f"{path}: no such file or folder")
    FolderScan(broken=scan.broken, tool_folders=scan.tool_folders).warn()  # other files in a folder: quiet
    if not files:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    return files


def labelled_split(folder: str | Path, classes: list[str]) -> tuple[Split, list[dict[str, Any]]]:
    """A ``<class>/*`` folder as a split labelled by the fitted class order, and what its scan passed over."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {not_found(folder, 'folder')}; pass a folder with one sub-folder per class")
    scan = FolderScan()
    files = _scan_split(folder, scan)
    unknown = [c for c in files if c not in classes and files[c]]
    if unknown:
        raise DataError(f"{folder / unknown[0]}: class '{unknown[0]}' is not one the model knows ({', '.join(classes)})")
    split = _labelled(files, {c: i for i, c in enumerate(classes)})
    if not len(split):
        raise DataError(f"{folder}: no image files found")
    scan.warn()
    return split, scan.skipped()


def _labelled(files: dict[str, list[str]], index: dict[str, int]) -> Split:
    """The files of a scanned split folder, class by class in name order, labelled by ``index``."""
    return Split([p for c in sorted(files) for p in files[c]], [index[c] for c in sorted(files) for _ in files[c]])


def labelled_files(paths: Sequence[Any], labels: Sequence[Any], classes: list[str] | None = None,
                   ) -> tuple[Split, list[str]]:
    """Image files given with their labels (scikit-learn's ``fit(X, y)``): a split labelled by ``classes`` (the
    fitted ones) or, when fitting, by the sorted distinct labels; returns the split and the classes."""
    files, names = [str(p) for p in paths], [str(label).strip() for label in labels]
    if len(files) != len(names):
        raise DataError(f"got {len(files)} image files but {len(names)} labels; pass one label per file")
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        what = _link_problem(Path(missing[0])) if os.path.lexists(missing[0]) else "no such image file"
        raise DataError(f"{missing[0]}: {what}; pass existing image files with labels=")
    classes = classes if classes is not None else sort_classes(names)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"label '{unknown[0]}' is not one the model knows ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    return Split(files, [index[n] for n in names]), classes
