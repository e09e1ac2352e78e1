"""A small MCP server that misbehaves on request, to test how the MCP env handles broken servers.

    python fake_server.py [MODE] [PORT]

MODE: ``ok`` (serve over stdio), ``exit`` (write to stderr and exit 3 at start), ``hang``
(never answer), ``garbage`` (write lines that are not JSON-RPC before serving), ``http`` (serve
streamable HTTP on 127.0.0.1:PORT). Tools: ``echo``, ``pid``, ``fail`` (an error result),
``hang`` (never returns), ``die`` (the process exits), ``die_soon`` (answers, then exits),
``garbage`` (non-JSON-RPC lines on stdout, then an answer), ``flood_stdout`` (megabytes on stdout
without a newline), ``flood_stderr`` (megabytes on stderr, then an answer), ``spawn`` (starts a
child process that sleeps, and returns its pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import anyio

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
WIRE = os.dup(1)
"""the pipe the client reads (the SDK's stdio server moves stray writes on fd 1 to stderr)"""
if mode == "exit":
    print("fake server: cannot open its database /nonexistent/db.sqlite", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
if mode == "garbage":
    os.write(1, b'starting up...\nnot json at all\n{"jsonrpc": "2.0", "id": 999, "result": {}}\n')

from mcp.server.mcpserver import MCPServer  # noqa: E402 - the modes above must not wait for it

server = MCPServer("fake")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("the fake tool failed on purpose")


@server.tool()
async def hang() -> str:
    """Never returns."""
    await anyio.sleep(3600)
    return "unreachable"


@server.tool()
def die() -> str:
    """The server exits in the middle of the call."""
    os._exit(7)


@server.tool()
def die_soon() -> str:
    """Answers, then the server exits."""
    threading.Timer(0.3, os._exit, (5,)).start()
    return "bye"


@server.tool()
def garbage(lines: int = 1000) -> str:
    """Write lines on stdout that are not JSON-RPC, then answer."""
    bad = b'garbage line\n{"not": "json-rpc"}\n[1, 2, 3]\n\xff\xfe broken utf-8\n'
    for _ in range(lines // 4):
        os.write(WIRE, bad)
    return "survived"


@server.tool()
def flood_stdout(mb: int = 20) -> str:
    """Write megabytes on stdout without a newline (no JSON-RPC line can follow)."""
    chunk = b"x" * 1_000_000
    for _ in range(mb):
        os.write(WIRE, chunk)
    return "flooded"


@server.tool()
def flood_stderr(mb: int = 20) -> str:
    """Write megabytes on stderr, then answer."""
    chunk = b"e" * 999_999 + b"\n"
    for _ in range(mb):
        os.write(2, chunk)
    os.write(2, b"the last words on stderr\n")
    return "flooded stderr"


@server.tool()
def spawn() -> str:
    """Start a child process that sleeps for an hour; returns its pid."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    return str(child.pid)


if mode == "http":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
else:
    server.run()
