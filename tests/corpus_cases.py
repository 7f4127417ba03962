"""Machinery of the bad-input corpus (tests/test_bad_inputs.py): the case type, the per-case workspace, the
session's prebuilt runs, running one case as a subprocess and checking what it did.

A case runs ``python -m transferkit ARGV`` in its own temporary folder (relative paths in ARGV are relative
to it) against a shared feature/engine cache, and is judged on:

* its exit code (one, or a tuple of acceptable ones);
* no ``Traceback`` on stderr;
* its message: for exit 0, a ``warning:`` line (unless ``warns`` is off); for exit 1 (predict: an input
  could not be read), a line with ``error:`` on stdout or stderr; for any other exit, exactly one line
  starting ``error:``; each regex of ``says`` must match that line; ``avoid`` must match none of stderr;
* the files under ``keep`` byte for byte unchanged (and links unchanged), and the paths in ``absent`` absent;
* optional limits (seconds, stderr length, address space) and an extra ``check``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from conftest import make_folder, make_image

KINDS = ("security", "lost", "traceback", "silent", "usability")
GiB = 1 << 30
WIDE = "200"  # COLUMNS for every case unless it sets its own: rich must not wrap a message line


@dataclass(frozen=True)
class Case:
    """One bad input (or misuse) and what transferkit must do with it."""

    name: str
    kind: str  # one of KINDS: what the issue found it doing wrong
    setup: Callable[["Workspace"], None]  # writes tiny generated files under the case's folder
    argv: tuple[str, ...]  # after `python -m transferkit`; "{tmp}" is the case's folder
    exit: int | tuple[int, ...]  # acceptable exit codes
    says: tuple[str, ...] = ()  # regexes the error (or, at exit 0, a warning) line must all match
    warns: bool = True  # at exit 0 a warning line must match ``says`` (False: exit 0 means it simply works)
    keep: tuple[str, ...] = ()  # files/folders (relative to the case's folder) that must survive unchanged
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards (a marker an exploit would create)
    avoid: tuple[str, ...] = ()  # regexes stderr must not match
    cwd: str = "."  # relative to the case's folder
    env: dict[str, str] = field(default_factory=dict)  # "{tmp}" is the case's folder
    address_space: int | None = None  # RLIMIT_AS for the command, bytes
    max_seconds: float | None = None
    max_stderr: int | None = None  # characters
    timeout: float = 120
    check: Callable[["Workspace", subprocess.CompletedProcess], None] | None = None
    skip: Callable[[], str | None] | None = None  # a reason to skip (a tool or a permission model is absent)
    note: str = ""  # what the intended behaviour is, where the fields do not say it

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"

    @property
    def exits(self) -> tuple[int, ...]:
        return self.exit if isinstance(self.exit, tuple) else (self.exit,)


# ----------------------------------------------------------------------------------------------------------
# Prebuilt artefacts, made once per session through the CLI (a case copies the ones it needs)
# ----------------------------------------------------------------------------------------------------------
TEXT_ROWS = [(f"a wonderful and warm film number {i}", "pos") for i in range(6)] + \
            [(f"a dull and tedious film number {i}", "neg") for i in range(6)]
FAST_FINETUNE = ("--epochs", "1", "--batch-size", "4", "--workers", "0", "--image-size", "32")


def csv_text(rows: Iterable[tuple[str, str]], header: str = "text,label") -> str:
    return header + "\n" + "".join(f"{text},{label}\n" for text, label in rows)


class Base:
    """Runs trained once per session (image probe, text probe, finished fine-tuning), built on first use."""

    RECIPES: dict[str, tuple[str, ...]] = {
        "image_run": ("train", "data", "--image-size", "32", "--engine", "onnx", "--out", "image_run"),
        "text_run": ("train", "reviews.csv", "--max-length", "16", "--engine", "onnx", "--out", "text_run"),
        "ft_run": ("train", "data", "--strategy", "finetune", *FAST_FINETUNE, "--augment", "none",
                   "--out", "ft_run"),
    }

    def __init__(self, root: Path, cache: Path) -> None:
        self.root, self.cache = root, cache
        self.built: dict[str, Path | str] = {}
        make_folder(root / "data", {"": 4})
        (root / "reviews.csv").write_text(csv_text(TEXT_ROWS))

    def get(self, name: str) -> Path:
        if name not in self.built:
            proc = run_cli(list(self.RECIPES[name]), self.root, self.env())
            self.built[name] = self.root / name if proc.returncode == 0 else \
                f"building the session's {name} failed (exit {proc.returncode}): {summary(proc)}"
        found = self.built[name]
        if isinstance(found, str):
            raise AssertionError(found)
        return found

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "TRANSFERKIT_CACHE": str(self.cache), "HF_HUB_OFFLINE": "1", "CI": "1",
                "COLUMNS": WIDE,
                # a UTF-8 terminal's strict stdout (this machine's C locale would escape what it cannot encode)
                "PYTHONIOENCODING": "utf-8:strict", **(extra or {})}


# ----------------------------------------------------------------------------------------------------------
# A case's folder and the helpers its setup uses
# ----------------------------------------------------------------------------------------------------------
class Workspace:
    def __init__(self, tmp: Path, base: Base) -> None:
        self.tmp, self.base = tmp, base

    def path(self, rel: str) -> Path:
        return self.tmp / rel

    def images(self, rel: str = "data", splits: dict[str, int] | None = None,
               classes: dict[str, tuple[int, int, int]] | None = None) -> Path:
        """``rel/<class>/img_i.png`` (2 classes x 4 images, 48 px) unless told otherwise."""
        kwargs = {"classes": classes} if classes else {}
        return make_folder(self.path(rel), splits or {"": 4}, **kwargs)

    def image(self, rel: str, colour: tuple[int, int, int] = (220, 40, 40)) -> Path:
        return make_image(self.path(rel), colour)

    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def copy(self, artefact: str, rel: str) -> Path:
        """A private copy of a session-built run (``image_run``, ``text_run``, ``ft_run``)."""
        target = self.path(rel)
        shutil.copytree(self.base.get(artefact), target, symlinks=True)
        return target


# ----------------------------------------------------------------------------------------------------------
# Running and judging
# ----------------------------------------------------------------------------------------------------------
def run_cli(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300,
            address_space: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    try:
        return subprocess.run([sys.executable, "-m", "transferkit", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, errors="backslashreplace", timeout=timeout,
                              preexec_fn=limit if address_space else None)
    except subprocess.TimeoutExpired as exc:
        def text(value: bytes | str | None) -> str:
            return value.decode(errors="backslashreplace") if isinstance(value, bytes) else value or ""

        return subprocess.CompletedProcess(exc.cmd, -9, text(exc.stdout), text(exc.stderr) + f"\n[timed out after "
                                                                                             f"{timeout:.0f} s]")


def message_lines(text: str, prefix: str, width: int = int(WIDE)) -> list[str]:
    """Lines starting with ``prefix``; a line that filled the terminal width is joined with the next (rich
    wraps long lines at the width)."""
    lines, found = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            while len(line) >= width - 20 and i + 1 < len(lines) and lines[i + 1].strip():
                i += 1
                line += " " + lines[i].strip()
            found.append(line)
    return found


def summary(proc: subprocess.CompletedProcess, limit: int = 200) -> str:
    """What happened, in one line: the traceback's last line, else the error/warning lines, else the tail."""
    err, out = proc.stderr or "", proc.stdout or ""
    if "Traceback" in err:
        last = [line for line in err.splitlines() if line.strip()][-1]
        return f"traceback: {last.strip()[:limit]}"
    if "[timed out" in err:
        return "timed out"
    lines = message_lines(err, "error:") or message_lines(err, "warning:") or \
        [line for line in (out + err).splitlines() if "error:" in line]
    if lines:
        return " | ".join(line[:limit] for line in lines[:2])
    tail = [line for line in (err + "\n" + out).splitlines() if line.strip()][-2:]
    return "no error or warning line; output ends: " + " / ".join(t.strip()[:limit // 2] for t in tail)


def snapshot(path: Path) -> dict[str, str] | None:
    """Every file under ``path`` by content digest, links by target, folders by name (None: absent)."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or path.is_file():
        return {".": digest(path)}
    found = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(folder) / name
            found[str(entry.relative_to(path))] = "folder" if name in dirs and not entry.is_symlink() else digest(entry)
    return found


def digest(path: Path) -> str:
    if path.is_symlink():
        return "link -> " + os.readlink(path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def run_case(case: Case, tmp: Path, base: Base) -> None:
    """Set the case up, run it, and raise AssertionError with a one-line account of what went wrong."""
    proc, problems = execute(case, tmp, base)
    if problems:
        raise AssertionError(f"{'; '.join(problems)} -- today: exit {proc.returncode}, {summary(proc)}")


def execute(case: Case, tmp: Path, base: Base) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Set the case up and run it: what it did, and what is wrong with that."""
    space = Workspace(tmp, base)
    case.setup(space)
    before = {rel: snapshot(tmp / rel) for rel in case.keep}
    env = base.env({k: fill(v, tmp) for k, v in case.env.items()})
    start = time.perf_counter()
    proc = run_cli([fill(a, tmp) for a in case.argv], tmp / case.cwd, env, case.timeout, case.address_space)
    seconds = time.perf_counter() - start
    problems = judge(case, proc, seconds)
    for rel, old in before.items():
        new = snapshot(tmp / rel)
        if new != old:
            changed = sorted(k for k in set(old or {}) | set(new or {}) if (old or {}).get(k) != (new or {}).get(k))
            problems.append(f"{rel} changed ({'deleted' if new is None else ', '.join(changed[:3])})")
    problems += [f"{rel} exists (created by the input)" for rel in case.absent if os.path.lexists(tmp / rel)]
    if not problems and case.check is not None:
        try:
            case.check(space, proc)
        except AssertionError as exc:  # its first line says what is wrong (pytest adds the expression's parts)
            problems.append(str(exc).splitlines()[0] if str(exc) else "extra check failed")
    return proc, problems


def judge(case: Case, proc: subprocess.CompletedProcess, seconds: float) -> list[str]:
    err, code, problems = proc.stderr or "", proc.returncode, []
    if code not in case.exits:
        problems.append(f"exit {code}, expected {' or '.join(map(str, case.exits))}")
    if "Traceback" in err:
        problems.append("traceback on stderr")
    if case.max_seconds is not None and seconds > case.max_seconds:
        problems.append(f"took {seconds:.1f} s (limit {case.max_seconds:.0f} s)")
    if case.max_stderr is not None and len(err) > case.max_stderr:
        problems.append(f"stderr is {len(err)} characters (limit {case.max_stderr})")
    problems += [f"stderr matches {pattern!r}" for pattern in case.avoid if re.search(pattern, err)]
    if code == 0:
        candidates, what = message_lines(err, "warning:"), "warning line"
    elif code == 1:
        candidates = [line for line in (proc.stdout + "\n" + err).splitlines() if "error:" in line]
        what = "line with error:"
    else:
        candidates, what = message_lines(err, "error:"), "error: line"
        if code in case.exits and len(candidates) != 1:
            problems.append(f"{len(candidates)} lines start with 'error:' (expected exactly one)")
    if case.says and code in case.exits and (code != 0 or case.warns):
        if not any(all(re.search(p, line) for p in case.says) for line in candidates):
            problems.append(f"no {what} matching {' and '.join(map(repr, case.says))}")
    return problems


def run_json(path: Path) -> dict:
    return json.loads(path.read_text())
