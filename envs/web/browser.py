"""Starting Chromium for Playwright, and reading ARIA snapshots taken in ``"ai"`` mode.

Debian's chromium (``apt-get install chromium``) is used when present, since ``playwright install``
needs the internet; ``AGENTGYM_CHROMIUM`` names another binary.

>>> snap = '- link "Kettle" [ref=e3] [cursor=pointer]:\\n  - /url: /p/1001.html\\n- button "Add" [ref=e4]'
>>> [(n.role, n.name, n.ref, n.url) for n in parse_snapshot(snap)]
[('link', 'Kettle', 'e3', '/p/1001.html'), ('button', 'Add', 'e4', None)]
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from dataclasses import dataclass

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """The Chromium binary to launch, or None to let Playwright use its own download."""
    env = os.environ.get("AGENTGYM_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


async def launch_browser():
    """Start Playwright and a headless Chromium; returns ``(playwright, browser)``."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as e:
        raise ImportError("the web envs need Playwright: pip install 'agentgym[web]'") from e
    pw = await async_playwright().start()
    try:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    except Exception as e:
        await pw.stop()
        raise RuntimeError(
            f"could not start Chromium ({str(e).splitlines()[0]}); install it with `apt-get install chromium` "
            "or point AGENTGYM_CHROMIUM at a Chromium binary"
        ) from e
    return pw, browser


def _driver_process(pw):
    """The asyncio subprocess of a started Playwright's driver (private attributes; None if absent)."""
    manager = getattr(pw.stop, "__self__", None)
    for holder in ("_client", "_connection"):  # this Playwright's layout, then upstream's
        proc = getattr(getattr(getattr(manager, holder, None), "_transport", None), "_proc", None)
        if isinstance(getattr(proc, "pid", None), int):
            return proc
    return None


def kill_driver(pw) -> bool:
    """Kill the driver of a Playwright whose event loop is gone, so it cannot be stopped politely.

    Its Chromium exits with it (the browser's pipe to the driver closes). The pid is checked to be
    a driver started by this process first, so a reused pid is never hit. Returns whether it was killed.
    """
    proc = _driver_process(pw) if pw is not None else None
    if proc is None:
        return False
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if ppid != os.getpid() or b"run-driver" not in argv:
            return False
        os.kill(proc.pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        return False
    transport = getattr(proc, "_transport", None)
    if hasattr(transport, "_closed"):
        transport._closed = True  # closing it when collected would call into the closed loop and raise
    return True


@dataclass
class Node:
    """One element of an ARIA snapshot that carries a ref."""

    role: str
    name: str
    ref: str
    url: str | None = None


_LINE = re.compile(
    r'^\s*- (?P<role>[\w-]+)(?: "(?P<name>(?:[^"\\]|\\.)*)")?.*?\[ref=(?P<ref>(?:f\d+)?e\d+)\]'
)
_URL = re.compile(r"^\s*- /url: (?P<url>.+)$")


def parse_snapshot(snapshot: str) -> list[Node]:
    """The elements with refs in an ``aria_snapshot(mode="ai")`` text, links with their ``/url``."""
    nodes: list[Node] = []
    for line in snapshot.splitlines():
        m = _LINE.match(line)
        if m:
            name = (m.group("name") or "").replace('\\"', '"')
            nodes.append(Node(m.group("role"), name, m.group("ref")))
            continue
        u = _URL.match(line)
        if u and nodes and nodes[-1].url is None and nodes[-1].role == "link":
            nodes[-1].url = u.group("url").strip().strip('"')
    return nodes
