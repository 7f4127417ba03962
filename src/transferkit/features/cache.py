"""Where transferkit keeps what it computes once: exported engines and extracted features.

Features are stored per model fingerprint as append-only shards (``.npy`` read memory-mapped, plus a keys
file). Writers never modify a shard: each writes a new one to a temporary name and renames it, keys last,
so concurrent runs cannot corrupt the cache and a reader only ever sees complete shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.atomic import atomic_write_bytes

ENV_CACHE_DIR = "TRANSFERKIT_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$TRANSFERKIT_CACHE``, else the user cache dir (``~/.cache/transferkit``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("transferkit"))


def file_key(path: str | Path) -> str:
    """Identity of a file's content without reading it: absolute path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return hashlib.blake2b(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=12).hexdigest()


@dataclass
class FeatureStore:
    """The cached features of one model fingerprint."""

    directory: Path
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._index: dict[str, tuple[str, int]] | None = None
        self._shards: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, fingerprint: str, cache_dir: str | Path | None = None, dtype: str = "float32",
             meta: dict[str, Any] | None = None) -> "FeatureStore":
        directory = cache_root(cache_dir) / "features" / fingerprint
        store = cls(directory, dtype)
        if meta is not None and not (directory / "meta.json").exists():
            atomic_write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode())
        return store

    def _load_index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            self._index = {}
            for keys_file in sorted(self.directory.glob("*.keys.json")):
                shard = keys_file.name.removesuffix(".keys.json")
                try:
                    keys = json.loads(keys_file.read_text())
                except (OSError, ValueError):
                    continue  # a shard being removed by `cache clear`; its rows are extracted again
                for row, key in enumerate(keys):
                    self._index[key] = (shard, row)
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

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
                self._shards[shard] = np.load(self.directory / f"{shard}.npy", mmap_mode="r")
            values = self._shards[shard][row]
            if out is None:
                out = np.empty((len(keys), values.shape[-1]), dtype=np.float32)
            out[i] = values
        return out

    def put(self, keys: list[str], features: np.ndarray) -> None:
        """Add rows as one new shard (atomic; safe against concurrent writers)."""
        if not keys:
            return
        shard = uuid.uuid4().hex
        self.directory.mkdir(parents=True, exist_ok=True)
        array = np.ascontiguousarray(features, dtype=self.dtype)
        tmp = self.directory / f".{shard}.npy.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, self.directory / f"{shard}.npy")
        # The keys file is what makes a shard visible, so it is written last.
        atomic_write_bytes(self.directory / f"{shard}.keys.json", json.dumps(keys).encode())
        index = self._load_index()
        for row, key in enumerate(keys):
            index[key] = (shard, row)


def cache_info(cache_dir: str | Path | None = None) -> dict[str, Any]:
    root = cache_root(cache_dir)
    entries = []
    for kind in ("features", "engines"):
        for directory in sorted((root / kind).glob("*")) if (root / kind).is_dir() else []:
            meta_file = directory / "meta.json"
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            rows = len(FeatureStore(directory)) if kind == "features" else None
            entries.append({"kind": kind, "fingerprint": directory.name, "backbone": meta.get("backbone", "?"),
                            "input_size": meta.get("input_size"), "items": rows, "bytes": size})
    return {"root": str(root), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}


def cache_clear(cache_dir: str | Path | None = None, kind: str | None = None) -> int:
    """Remove cached features and/or engines; returns bytes freed."""
    root = cache_root(cache_dir)
    freed = 0
    for sub in ([kind] if kind else ["features", "engines"]):
        directory = root / sub
        if directory.is_dir():
            freed += sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            shutil.rmtree(directory, ignore_errors=True)
    return freed
