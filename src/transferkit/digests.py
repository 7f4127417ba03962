"""Content digests: the identities under which weights, engines and features are cached."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def file_digest(path: str | Path) -> str:
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
