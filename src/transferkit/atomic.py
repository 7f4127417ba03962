"""Files, the layer below everything that writes them: one way to write a file so a kill at any moment leaves
either the old file or the whole new one, and why a folder cannot be written to.

Every writer (run files, checkpoints, cached features and engines) writes to a temporary sibling and renames
it into place with ``os.replace``; readers therefore never see half a file.
"""

from __future__ import annotations

import os
import tempfile
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


def reason(exc: BaseException) -> str:
    """An OS error's own words ("No space left on device"), without errno numbers and paths."""
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120] or type(exc).__name__


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (what creating ``path`` writes into)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_problem(folder: str | Path) -> str | None:
    """Why nothing can be created in ``folder`` (or where it would be created), or None if something can:
    a temporary file is made and removed, which also catches read-only mounts and ACLs that modes do not show."""
    target = nearest_existing(Path(folder))
    if not target.is_dir():
        return f"{target} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".transferkit-probe-"):
            pass
    except OSError as exc:
        return f"{reason(exc)} in {target}" if target != Path(os.path.abspath(folder)) else reason(exc)
    return None
