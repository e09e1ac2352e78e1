"""Fixtures for the MCP env tests: the real servers (mcp-server-time, mcp-server-git from PyPI,
@modelcontextprotocol/server-filesystem from npm, all installed by scripts/setup.sh), required
under CI=true and skipped elsewhere with the command that installs them; and a task-file writer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgym.testing import in_ci, need

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
FS_SERVER = ROOT / ".mcp-servers" / "node_modules" / ".bin" / "mcp-server-filesystem"
FAKE_SERVER = Path(__file__).with_name("fake_server.py")
SETUP = "bash scripts/setup.sh"


@pytest.fixture(autouse=True)
def _mcp_sdk():
    need(module="mcp", install="pip install 'agentgym[mcp]'")


@pytest.fixture
def time_server() -> str:
    need(module="mcp_server_time", install=f"pip install mcp-server-time==2026.10.19 (or {SETUP})")
    return str(BIN / "mcp-server-time")


@pytest.fixture
def git_server() -> str:
    need(
        module="mcp_server_git", binary="git", install=f"pip install mcp-server-git==2026.10.19 (or {SETUP})"
    )
    return f"{BIN / 'mcp-server-git'} --repository {{workdir}}"


@pytest.fixture
def fs_server() -> str:
    need(binary="node", install="apt-get install nodejs npm")
    if not FS_SERVER.exists():
        reason = f"needs {FS_SERVER}; install it with {SETUP}"
        if in_ci():
            pytest.fail(f"CI=true and this test {reason}", pytrace=False)
        pytest.skip(reason)
    return f"{FS_SERVER} {{workdir}}"


@pytest.fixture
def fake():
    """``fake(mode)``: the command line of the misbehaving test server (fake_server.py) in ``mode``."""

    def command(mode: str = "ok") -> str:
        return f"{sys.executable} {FAKE_SERVER} {mode}"

    return command


@pytest.fixture
def http_fake():
    """The test server over streamable HTTP on a free loopback port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_SERVER), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the HTTP test server did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def write_tasks(tmp_path):
    """``write_tasks(rows)`` writes a JSONL task file and returns its path."""

    def write(rows: list[dict], name: str = "tasks.jsonl") -> str:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    return write


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
