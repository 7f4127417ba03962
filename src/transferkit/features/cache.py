"""Where transferkit keeps what it computes once: exported engines and extracted features.

Features are stored per model fingerprint as append-only shards (``.npy`` read memory-mapped, plus a keys
file). Writers never modify a shard: each writes a new one to a temporary name and renames it, keys last,
so concurrent runs cannot corrupt the cache and a reader only ever sees complete shards; a shard that is
damaged anyway (a full disk, a copy cut short) is left out of the index and its rows are extracted again.

The cache root transferkit creates carries a ``CACHEDIR.TAG`` (the standard marker, so backup tools skip it);
``cache clear`` deletes only under a root that has it, or under the default root, which older versions
created without one. A cache that cannot be written to is a one-line warning: the features are still used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from transferkit.atomic import atomic_write_bytes, reason, write_problem
from transferkit.errors import CacheError, arg
from transferkit.progress import log

ENV_CACHE_DIR = "TRANSFERKIT_CACHE"
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This file is a cache directory tag created by transferkit (https://bford.info/cachedir/).\n"
               "# transferkit's `cache clear` deletes cached features and engines only where it finds this file.\n")
KINDS = ("features", "engines")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$TRANSFERKIT_CACHE``, else the user cache dir (``~/.cache/transferkit``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    return default_root()


def default_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("transferkit"))


def claim_root(root: Path) -> Path:
    """Create the cache root if needed and mark it as transferkit's, when it is new or empty (a folder the user
    named that already holds other things is used, but never claimed). Errors are left to the writers."""
    marker = root / MARKER
    if marker.is_file():
        return root
    try:
        if not root.exists():
            root.mkdir(parents=True, exist_ok=True)
        if root.is_dir() and not any(root.iterdir()):
            atomic_write_bytes(marker, MARKER_TEXT.encode())
    except OSError:
        pass
    return root


def is_marked(root: Path) -> bool:
    try:
        return "transferkit" in (root / MARKER).read_text(errors="replace")[:1000]
    except OSError:
        return False


def check_cache_writable(cache_dir: str | Path | None, hint: str = "") -> None:
    """Fail before any work if the cache folder cannot be written to (``hint``: what to do instead)."""
    root = cache_root(cache_dir)
    problem = write_problem(root)
    if problem:
        raise CacheError(f"{root}: cannot write the cache there ({problem}); pass {arg('cache_dir')} with a "
                         f"writable folder{hint}")


def file_key(path: str | Path) -> str:
    """Identity of a file's content without reading it: absolute path, size and modification time.

    The path's bytes are digested as the OS has them, so a name that is not valid UTF-8 (kept by Python as
    surrogate escapes) has a key too; for every other name they are the UTF-8 bytes keys always used.
    """
    path = Path(path).resolve()
    stat = path.stat()
    identity = os.fsencode(path) + f"|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return hashlib.blake2b(identity, digest_size=12).hexdigest()


@dataclass
class FeatureStore:
    """The cached features of one model fingerprint."""

    directory: Path
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._index: dict[str, tuple[str, int]] | None = None
        self._shards: dict[str, np.ndarray] = {}
        self.unwritable = False

    @classmethod
    def open(cls, fingerprint: str, cache_dir: str | Path | None = None, dtype: str = "float32",
             meta: dict[str, Any] | None = None) -> "FeatureStore":
        directory = claim_root(cache_root(cache_dir)) / "features" / fingerprint
        store = cls(directory, dtype)
        if meta is not None and not (directory / "meta.json").exists():
            store.write(lambda: atomic_write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode()))
        return store

    def write(self, action: Callable[[], None]) -> None:
        """Run a cache write; when the cache cannot be written to, say so once and go on without writing."""
        if self.unwritable:
            return
        try:
            action()
        except OSError as exc:
            self.unwritable = True
            log(f"warning: cannot write to the feature cache {self.directory} ({reason(exc)}); going on without "
                f"caching ({arg('cache_dir')} moves the cache, {arg('cache', False)} turns it off)")

    def _load_index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            self._index = {}
            for keys_file in sorted(self.directory.glob("*.keys.json")):
                shard = keys_file.name.removesuffix(".keys.json")
                try:
                    keys = json.loads(keys_file.read_text())
                except (OSError, ValueError):
                    continue  # a shard being removed by `cache clear`; its rows are extracted again
                if not isinstance(keys, list) or shard_rows(self.directory / f"{shard}.npy") != len(keys):
                    continue  # damaged: its rows are extracted again (and stored in a new shard)
                for row, key in enumerate(keys):
                    self._index[str(key)] = (shard, row)
        return self._index

    def refresh(self) -> None:
        """Read the index again when next asked: other processes' shards written since are then seen."""
        self._index = None

    def __len__(self) -> int:
        return len(self._load_index())

    def keys(self) -> list[str]:
        """Every key the cache holds a row for."""
        return list(self._load_index())

    def __contains__(self, key: str) -> bool:
        return key in self._load_index()

    def get(self, keys: list[str]) -> np.ndarray:
        """Rows for ``keys`` (all must be present), as float32."""
        index = self._load_index()
        locations = [index[key] for key in keys]
        if not locations:
            return np.zeros((0, 0), dtype=np.float32)
        out = None
        for i, (shard, row) in enumerate(locations):
            if shard not in self._shards:
                self._shards[shard] = self._open_shard(shard)
            values = self._shards[shard][row]
            if out is None:
                out = np.empty((len(keys), values.shape[-1]), dtype=np.float32)
            out[i] = values
        return out

    def _open_shard(self, shard: str) -> np.ndarray:
        try:
            return np.load(self.directory / f"{shard}.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:  # removed or cut short since the index was read
            raise CacheError(f"{self.directory / shard}.npy: cached features vanished or are damaged "
                             f"({reason(exc)}); run again (they are extracted anew)") from None

    def put(self, keys: list[str], features: np.ndarray) -> None:
        """Add rows as one new shard (atomic; safe against concurrent writers). A cache that cannot be written
        to is a warning, once: the features are still returned by the caller."""
        if keys:
            self.write(lambda: self._write_shard(keys, features))

    def _write_shard(self, keys: list[str], features: np.ndarray) -> None:
        shard = uuid.uuid4().hex
        self.directory.mkdir(parents=True, exist_ok=True)
        array = np.ascontiguousarray(features, dtype=self.dtype)
        tmp = self.directory / f".{shard}.npy.tmp"
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
            os.replace(tmp, self.directory / f"{shard}.npy")
        finally:
            tmp.unlink(missing_ok=True)
        # The keys file is what makes a shard visible, so it is written last.
        atomic_write_bytes(self.directory / f"{shard}.keys.json", json.dumps(keys).encode())
        index = self._load_index()
        for row, key in enumerate(keys):
            index[key] = (shard, row)


def shard_rows(path: Path) -> int | None:
    """Rows of a shard, from its ``.npy`` header, if the file is whole (None if not: cut short, not an array)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            shape, _, dtype = readers[np.lib.format.read_magic(handle)](handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
            size = os.fstat(handle.fileno()).st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return shape[0] if len(shape) == 2 and size == expected else None


def cache_info(cache_dir: str | Path | None = None) -> dict[str, Any]:
    root = cache_root(cache_dir)
    entries = []
    for kind in KINDS:
        for directory in sorted((root / kind).glob("*")) if (root / kind).is_dir() else []:
            meta = read_meta(directory / "meta.json")
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            rows = len(FeatureStore(directory)) if kind == "features" else None
            entries.append({"kind": kind, "fingerprint": directory.name, "backbone": meta.get("backbone", "?"),
                            "input_size": meta.get("input_size"), "items": rows, "bytes": size})
    return {"root": str(root), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}


def read_meta(path: Path) -> dict[str, Any]:
    """An entry's meta.json; a missing or damaged one describes nothing."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def cache_clear(cache_dir: str | Path | None = None, kind: str | None = None) -> int:
    """Remove cached features and/or engines; returns bytes freed. Only under a root marked as transferkit's
    (or the default root): ``--cache-dir ~`` must not delete a ``~/features`` that is the user's own."""
    root = cache_root(cache_dir)
    if not root.exists():
        return 0
    if not is_marked(root) and root != default_root():
        raise CacheError(f"{root}: not marked as a transferkit cache (it has no {MARKER} from transferkit), so "
                         f"nothing was deleted; if it is a cache of an older transferkit, delete its "
                         f"{' and '.join(k + '/' for k in KINDS)} folders yourself")
    freed = 0
    for sub in ([kind] if kind else KINDS):
        directory = root / sub
        if directory.is_dir():
            freed += sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            shutil.rmtree(directory, ignore_errors=True)
    return freed
