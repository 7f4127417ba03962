"""A throw-away PostgreSQL server (the Debian ``postgresql`` package's initdb and pg_ctl): a data folder in a
temporary folder, the server on a free loopback port (its unix socket in that folder too), one database, a
password, stopped and removed after. Used by the tests' ``postgres_url`` fixture and by bench/scale.py.

PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user the package creates (or
``nobody``), through ``runuser``, as Debian's own pg_ctlcluster does."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

USER, DATABASE = "tk", "studies"


def postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    found = shutil.which("pg_ctl")
    for candidate in [found, *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]:
        if candidate:
            folder = Path(candidate).resolve().parent  # /usr/local/bin/pg_ctl links into the version's bin/
            if all((folder / name).is_file() for name in ("initdb", "postgres", "createdb")):
                return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_owner() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs PostgreSQL's programs as a user other than root, and that user."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], account
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields ``postgresql://tk:PASSWORD@127.0.0.1:PORT/studies`` of a fresh server, stopped and removed after."""
    folder = postgres_bin()
    if folder is None:
        raise FileNotFoundError("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    prefix, account = as_owner()
    root = Path(tempfile.mkdtemp(prefix="tk-postgres-"))  # not pytest's tmp folder: the owner must reach it
    password = "pw-" + secrets.token_hex(8)
    (root / "password").write_text(password + "\n")
    if account is not None:
        for path in (root, root / "password"):
            os.chown(path, account.pw_uid, account.pw_gid)
    data, port = root / "data", free_port()
    env = {**os.environ, "PGPASSWORD": password, "LC_ALL": "C"}

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, cwd=root, env=env, capture_output=True, timeout=120)

    try:
        run(str(folder / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={root / 'password'}", "--auth=scram-sha-256",
            "--encoding=UTF8", "--no-sync")
        run(str(folder / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
        try:
            run(str(folder / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE)
            yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
        finally:
            run(str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
