"""Content digests: the identities under which weights, engines and features are cached."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np


# A backbone's fingerprint is asked for many times in a run (every tune trial, every engine plan): a weights
# file is hashed once per process for as long as its size and mtime stay the same.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """Content digest of a file (remembered per path, size and mtime)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = hash_file(path)
    return _FILE_DIGESTS[key]


def hash_file(path: str | Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_fingerprint(state: Mapping[str, Any]) -> str:
    """A digest of named tensors (torch tensors or numpy arrays), independent of their order."""
    digest = hashlib.blake2b(digest_size=12)
    for key in sorted(state):
        value = state[key]
        array = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else np.ascontiguousarray(value)
        digest.update(key.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
