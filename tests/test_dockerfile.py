"""The Dockerfile keeps the properties we rely on: non-root, cached dependencies, a working health check."""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """Split Dockerfile text into (INSTRUCTION, arguments), joining continuations, dropping comments."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return result


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def exec_form(args: str) -> list[str]:
    """Parse an exec-form argument list; Docker silently falls back to shell form if the JSON is invalid."""
    parsed = json.loads(args)
    assert isinstance(parsed, list), args
    assert all(isinstance(part, str) for part in parsed), args
    return parsed


def healthcheck_command(steps: list[tuple[str, str]]) -> list[str]:
    (args,) = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    _options, _, command = args.partition(" CMD ")
    return exec_form(command)


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n    # inner\n    && y\n"
    assert instructions(text) == [("FROM", "a AS b"), ("RUN", "x && y")]


def test_is_multi_stage(steps: list[tuple[str, str]]) -> None:
    assert sum(1 for keyword, _ in steps if keyword == "FROM") >= 2


def test_final_stage_runs_as_non_root(steps: list[tuple[str, str]]) -> None:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    users = [args for keyword, args in steps[last_from:] if keyword == "USER"]
    assert users, "no USER after the last FROM: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_dependencies_are_installed_before_the_source_is_copied(steps: list[tuple[str, str]]) -> None:
    copies = [args.split() for keyword, args in steps if keyword == "COPY"]
    pyproject = next(i for i, parts in enumerate(copies) if "pyproject.toml" in parts)
    source = next(i for i, parts in enumerate(copies) if any(p.rstrip("/") == "bot" for p in parts))
    assert pyproject < source
    # The dependency layer must not depend on the source either.
    assert not any(p.rstrip("/") in {"bot", "handlers", "storage", "."} for p in copies[pyproject][:-1])


def test_cmd_serves(steps: list[tuple[str, str]]) -> None:
    cmds = [args for keyword, args in steps if keyword == "CMD"]
    assert cmds, "no CMD"
    assert exec_form(cmds[-1]) == ["gmail-reconnect", "serve"]


def test_healthcheck_probes_healthz(steps: list[tuple[str, str]]) -> None:
    command = healthcheck_command(steps)
    assert "/healthz" in " ".join(command)


class _HealthServer(ThreadingHTTPServer):
    status = 200


class _HealthHandler(BaseHTTPRequestHandler):
    server: _HealthServer

    def do_GET(self) -> None:
        status = self.server.status if self.path == "/healthz" else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def health_server() -> Iterator[_HealthServer]:
    server = _HealthServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_runs(
    steps: list[tuple[str, str]], health_server: _HealthServer, status: int, healthy: bool
) -> None:
    health_server.status = status
    command = healthcheck_command(steps)
    assert command[0] == "python"
    port = str(health_server.server_address[1])
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env={"PORT": port},
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert (result.returncode == 0) is healthy, result.stderr.decode()
