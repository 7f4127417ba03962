"""One way to write a file so a kill at any moment leaves either the old file or the whole new one.

Every writer (run files, checkpoints, cached features and engines) writes to a temporary sibling and renames
it into place with ``os.replace``; readers therefore never see half a file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from transferkit.errors import TransferkitError


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)``, then rename the temporary file to ``path`` (``suffix`` keeps the extension
    some writers insist on, such as ``.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def check_replaceable(path: str | Path, option: str, ours: Callable[[bytes], bool], example: str) -> None:
    """A file a command writes may replace only a file it wrote before (``ours(first 4 kB)``): never a folder, a
    device or pipe (opening one to look would block), or another file of the user's."""
    target = Path(path)
    if target.is_dir():
        raise TransferkitError(f"{option} {path} is a folder; give a file name such as {example}")
    if not target.exists():
        return
    if not target.is_file():
        raise TransferkitError(f"{option} {path} is not a regular file (a device, pipe or socket); give a file name "
                               f"such as {example}")
    with open(target, "rb") as handle:
        head = handle.read(4096)
    if not ours(head):
        raise TransferkitError(f"{option} {path} exists and is not a file transferkit wrote there; give another "
                               "file name")
