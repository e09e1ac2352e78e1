"""One MCP server connection behind a synchronous, time-limited interface.

The official SDK's ``Client`` lives in anyio task groups that must be entered and left by one
task. So a ``Connection`` owns a private event loop in a daemon thread, and the whole session is
one task on it: that task starts the server (a command over stdio, or a URL over streamable
HTTP), lists its tools and keeps the session open until ``close``. ``call`` sends a request to
the loop and waits at most ``timeout`` seconds, so a server that hangs can never hang the caller.

What a server does wrong becomes an exception that says what happened:

- ``ServerError``: the server cannot be started or reached, died, or did not answer in time
  (``status`` is ``"timeout"`` or ``"env_error"``). Its message ends with the last 4 KB the
  server wrote on stderr (stderr is read as it comes, and only that tail is kept).
- ``ToolCallError``: the server answered a call with a JSON-RPC error (an unknown tool, invalid
  arguments) or with a result that is not valid; the session goes on.

Lines on the server's stdout that are not JSON-RPC are dropped by the SDK and counted here
(``bad_lines``). Closing stops the server the way the SDK does (stdin closed, then SIGTERM and
SIGKILL to its process group), so its children go with it.

>>> conn = Connection(["no-such-mcp-server"], timeout=5)
>>> conn.open()
Traceback (most recent call last):
...
agentgym.envs.mcp.client.ServerError: cannot start the MCP server 'no-such-mcp-server': no such program on PATH; install it or give its full path in server=...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from concurrent.futures import Future
from typing import Any

import anyio
import mcp_types as types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

STDERR_TAIL = 4096
"""bytes of the server's stderr kept to show in errors"""
CLOSE_TIMEOUT = 10.0
"""seconds ``close`` waits for the SDK to stop the server before giving up on it"""


class _DropUnparsedLines(logging.Filter):
    """The SDK logs a traceback for every stdout line that is not JSON-RPC; a server that floods
    stdout would flood our stderr with them. ``Connection`` counts those lines instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


logging.getLogger("mcp.client.stdio").addFilter(_DropUnparsedLines())


class ServerError(RuntimeError):
    """The MCP server cannot be reached, died, or did not answer in time; the session is over."""

    def __init__(self, message: str, status: str = "env_error"):
        super().__init__(message)
        self.status = status


class ToolCallError(RuntimeError):
    """The server refused one call (a JSON-RPC error, or a result that is not valid)."""


def _root_cause(e: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)]
        e = (inner or e.exceptions)[0]
    return e


def _closed(e: BaseException) -> bool:
    return isinstance(e, MCPError) and e.code == CONNECTION_CLOSED and e.message == "Connection closed"


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every live process (from /proc; empty where there is
    none)."""
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state, ppid, _pgrp, session = stat[stat.rfind(b")") + 2 :].split()[:4]
        if state != b"Z":
            table[int(name)] = (int(ppid), int(session))
    return table


def _child_holding(pipe_inode: int) -> int | None:
    """The child process of ours that holds this pipe (the server, holding its stderr)."""
    me, link = os.getpid(), f"pipe:[{pipe_inode}]"
    for pid, (ppid, _) in _proc_table().items():
        if ppid != me:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                        return pid
    return None


def kill_tree(root: int) -> list[int]:
    """SIGKILL every process left of a server: its session (the SDK starts each server in a
    session of its own) and its descendants. Returns the pids it killed."""
    table = _proc_table()
    doomed = {pid for pid, (_, session) in table.items() if session == root}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in doomed:
                doomed.add(pid)
                todo.append(pid)
    doomed.discard(os.getpid())
    killed = []
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    # SIGKILL lands asynchronously: wait (briefly) until they are gone, so a caller that goes on
    # never sees a half-dead server
    deadline = time.monotonic() + 2.0
    while killed and time.monotonic() < deadline:
        live = _proc_table()
        if not any(pid in live for pid in killed):
            break
        time.sleep(0.01)
    return killed


class Connection:
    """A session with one MCP server, used from ordinary (non-async) code.

    Args:
        command: the server's command line (program and arguments), run over stdio.
        url: the server's streamable HTTP endpoint (instead of a command).
        cwd: the working directory of the server process.
        timeout: seconds for starting the server and for each call.

    The server gets the SDK's short list of inherited environment variables (PATH, HOME, ...),
    not all of ours: a server that needs more can be started as ``env NAME=VALUE server ...``.
    """

    def __init__(
        self,
        command: list[str] | None = None,
        url: str | None = None,
        *,
        cwd: str | None = None,
        timeout: float = 30.0,
    ):
        if (command is None) == (url is None):
            raise ValueError("give a server command or a url, not both or neither")
        self.command, self.url, self.cwd, self.timeout = command, url, cwd, timeout
        self.tools: list[types.Tool] = []
        self.bad_lines = 0
        """stdout lines that were not JSON-RPC (dropped)"""
        self._stderr = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Future | None = None
        self._scope: anyio.CancelScope | None = None
        self._stop: asyncio.Event | None = None
        self._client: Client | None = None
        self.pid: int | None = None
        """the server process (a command on Linux), found once it runs"""

    @property
    def where(self) -> str:
        return (
            f"the MCP server {' '.join(self.command)!r}" if self.command else f"the MCP server at {self.url}"
        )

    @property
    def alive(self) -> bool:
        return self._client is not None and self._session is not None and not self._session.done()

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace").strip()

    def _explain(self, what: str) -> str:
        parts = [f"{self.where} {what}"]
        if self.bad_lines:
            parts.append(f"it wrote {self.bad_lines} line(s) on stdout that are not JSON-RPC")
        tail = self.stderr_tail()
        if tail:
            parts.append(f"its stderr ends with:\n{tail}")
        return "; ".join(parts)

    # ----- the session task, on the private loop ----------------------------------------------

    def _read_stderr(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(fd)
            return
        self._stderr += chunk
        del self._stderr[:-STDERR_TAIL]

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):  # a stdout line the SDK could not parse
            self.bad_lines += 1

    def _transport(self, errlog: Any) -> Any:
        if self.url is not None:
            return streamable_http_client(self.url)
        program, *args = self.command
        params = StdioServerParameters(
            command=program, args=args, cwd=self.cwd, encoding_error_handler="replace"
        )
        return stdio_client(params, errlog=errlog)

    async def _main(self, ready: Future) -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        loop.add_reader(read_fd, self._read_stderr, read_fd)
        errlog = os.fdopen(write_fd, "w")
        self._stop = asyncio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                client = Client(self._transport(errlog), message_handler=self._on_message, cache=None)
                async with client:
                    if self.command is not None:
                        self.pid = _child_holding(os.fstat(read_fd).st_ino)
                    errlog.close()  # the server holds its own copy; EOF comes when it exits
                    tools: list[types.Tool] = []
                    cursor = None
                    for _ in range(100):  # pages; a server that never stops paging cannot hang us
                        page = await client.list_tools(cursor=cursor)
                        tools.extend(page.tools)
                        cursor = page.next_cursor
                        if cursor is None:
                            break
                    self.tools, self._client = tools, client
                    ready.set_result(tools)
                    await self._stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._client = None
            errlog.close()
            loop.remove_reader(read_fd)
            self._drain_stderr(read_fd)
            os.close(read_fd)
            if not ready.done():
                ready.set_exception(ServerError(self._explain("closed the connection during startup")))

    def _drain_stderr(self, fd: int) -> None:
        """Keep what the server wrote last (reading at most 4 MB more: a child of the server that
        outlived it may still be writing)."""
        for _ in range(64):
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL]

    # ----- the synchronous interface ---------------------------------------------------------

    def open(self) -> list[types.Tool]:
        """Start the server (or connect to it) and list its tools; raises ``ServerError``."""
        if self._session is not None:
            raise RuntimeError("this connection was opened already; make a new Connection")
        if self.command is not None:
            program = shutil.which(self.command[0])
            if program is None:
                raise ServerError(
                    f"cannot start {self.where}: no such program on PATH; install it or give its full "
                    "path in server=..."
                )
            # the server runs in cwd: a program given relative to here must still be found
            self.command = [os.path.abspath(program) if os.sep in program else program, *self.command[1:]]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentgym-mcp", daemon=True)
        self._thread.start()
        ready: Future = Future()
        self._session = asyncio.run_coroutine_threadsafe(self._main(ready), self._loop)
        try:
            return ready.result(self.timeout)
        except TimeoutError:
            self.close()
            raise ServerError(
                self._explain(f"did not start and list its tools within {self.timeout:g} s"), "timeout"
            ) from None
        except BaseException as e:
            self.close()
            cause = _root_cause(e)
            if isinstance(cause, ServerError) or _closed(cause):
                raise ServerError(self._explain("closed the connection during startup")) from None
            raise ServerError(self._explain(f"failed to start ({type(cause).__name__}: {cause})")) from None

    def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool; waits at most ``timeout`` seconds.

        Raises:
            ToolCallError: the server answered with an error (the session goes on).
            ServerError: the server is gone or did not answer in time (the session is over).
        """
        client = self._client
        if client is None or not self.alive:
            raise ServerError(self._explain("is not running"))

        async def send() -> types.CallToolResult:
            with anyio.fail_after(self.timeout):
                return await client.call_tool(name, arguments)

        future = asyncio.run_coroutine_threadsafe(send(), self._loop)
        try:
            return future.result(self.timeout + 5)
        except TimeoutError:
            future.cancel()
            raise ServerError(
                self._explain(f"did not answer the call of {name!r} within {self.timeout:g} s"), "timeout"
            ) from None
        except Exception as e:
            cause = _root_cause(e)
            if _closed(cause):
                raise ServerError(
                    self._explain(f"closed the connection during the call of {name!r}")
                ) from None
            if isinstance(cause, MCPError):
                raise ToolCallError(cause.message) from None
            raise ToolCallError(
                f"the server's answer was not valid ({type(cause).__name__}: {cause})"
            ) from None

    def close(self) -> None:
        """Stop the server and the loop; safe to call twice, and after a failed ``open``."""
        loop, session = self._loop, self._session
        if loop is None or loop.is_closed():
            return
        if session is not None and not session.done():
            if self._client is not None:  # an open session: leave it the SDK's way
                loop.call_soon_threadsafe(self._stop.set)
                with contextlib.suppress(BaseException):
                    session.result(CLOSE_TIMEOUT)
            if not session.done() and self._scope is not None:  # stuck in the handshake, or in leaving
                loop.call_soon_threadsafe(self._scope.cancel)
                with contextlib.suppress(BaseException):
                    session.result(CLOSE_TIMEOUT)
        if self.pid is not None:  # what outlived the SDK's shutdown (a server's children, say)
            kill_tree(self.pid)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            loop.close()
        self._client = None
