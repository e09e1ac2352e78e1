"""Servers for the interoperability tests: ``agentgym env serve`` in a subprocess, and an env
written with the ``openenv-core`` package served by that package's own server code (from
``.venv-openenv``: openenv-core's requirements cannot share the main virtualenv)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from agentgym.testing import in_ci

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OPENENV_PYTHON = Path(os.environ.get("OPENENV_VENV", ROOT / ".venv-openenv")) / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A server command in a subprocess, ready once made (its /health answers)."""

    def __init__(self, argv: list[str], port: int, cwd: str | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        # stderr to a file: a pipe nobody reads fills up (64 KiB) and stalls the server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the server runs
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "healthy":
                        break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"no server at {self.url} after 60 s") from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def served():
    """``served(env_id, *flags)`` starts ``agentgym env serve``; every server is stopped after the test."""
    from agentgym.envs.openenv.server import ServerProcess

    servers: list[ServerProcess] = []

    def start(env_id: str, *args: str) -> ServerProcess:
        servers.append(ServerProcess(env_id, *args))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def need_openenv() -> Path:
    """The python of ``.venv-openenv``, or fail (CI) / skip with the command that makes it."""
    ok = OPENENV_PYTHON.exists() and (
        subprocess.run([str(OPENENV_PYTHON), "-c", "import openenv.core"], capture_output=True).returncode
        == 0
    )
    if not ok:
        reason = f"needs openenv-core in {OPENENV_PYTHON.parent.parent}; make it with: make setup"
        if in_ci():
            pytest.fail(f"CI=true and this test {reason}", pytrace=False)
        pytest.skip(reason)
    return OPENENV_PYTHON


@pytest.fixture
def openenv_python() -> Path:
    return need_openenv()


def _openenv_app(module: str):
    python = need_openenv()
    port = free_port()
    argv = [str(python), "-m", "uvicorn", f"{module}:app", "--port", str(port), "--log-level", "warning"]
    return Served(argv, port, cwd=str(HERE))


@pytest.fixture
def openenv_mcp_server():
    """``openenv_mcp_env.py`` (an ``MCPEnvironment`` over FastMCP tools, written against
    openenv-core) served by openenv-core's own app."""
    server = _openenv_app("openenv_mcp_env")
    yield server
    server.stop()


@pytest.fixture
def openenv_echo_server():
    """``openenv_echo_env.py`` (an env written against openenv-core) served by openenv-core's own
    FastAPI app under uvicorn."""
    server = _openenv_app("openenv_echo_env")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from agentgym.policies.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)
