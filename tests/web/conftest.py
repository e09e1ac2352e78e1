"""Shared fixtures of the web env tests: one env (one browser) per shipped site for the session."""

from __future__ import annotations

import asyncio
import os

import pytest

from agentgym.testing import need

INSTALL = "pip install 'agentgym[web]' && apt-get install chromium"


def need_browser() -> None:
    need(module="playwright", binary="chromium", install=INSTALL)


@pytest.fixture(scope="session")
def shop_env():
    need_browser()
    import agentgym

    env = agentgym.make("web/shop-v0")
    yield env
    env.close()


@pytest.fixture(scope="session")
def wiki_env():
    need_browser()
    import agentgym

    env = agentgym.make("web/wiki-v0")
    yield env
    env.close()


@pytest.fixture
def browser_ok():
    need_browser()


@pytest.fixture(scope="session", name="need_browser")
def need_browser_fixture():
    need_browser()


@pytest.fixture
def browser_pids():
    """A function listing the Chromium browser processes this test process started."""
    return chromium_children


@pytest.fixture(scope="session")
def site_writer():
    """``write_site(root, origin, pages, tasks)``: a cached site made by hand (see below)."""
    return write_site


@pytest.fixture
def play():
    return play_episode


def play_episode(env, policy, task_id: str, seed: int = 0):
    """One episode with the sync API; returns the trajectory."""
    env.reset(seed=seed, options={"task_id": task_id})
    done = False
    while not done:
        msg = asyncio.run(policy.act(env.trajectory, env))
        _, _, terminated, truncated, _ = env.step(msg)
        done = terminated or truncated
    return env.trajectory


def write_site(root, origin: str, pages: dict[str, str], tasks: list[dict]):
    """A cached site directory made by hand: ``site.har`` answering ``pages`` (path -> HTML) and a
    topology, without recording anything (quick; the recorder has tests of its own)."""
    import json
    import re
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries, topo = [], {}
    for path, body in pages.items():
        url = origin + path
        entries.append(
            {
                "startedDateTime": "2026-01-01T00:00:00.000Z",
                "time": 1,
                "request": {
                    "method": "GET",
                    "url": url,
                    "httpVersion": "HTTP/1.1",
                    "cookies": [],
                    "headers": [],
                    "queryString": [],
                    "headersSize": -1,
                    "bodySize": -1,
                },
                "response": {
                    "status": 200,
                    "statusText": "OK",
                    "httpVersion": "HTTP/1.1",
                    "cookies": [],
                    "headers": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
                    "content": {"size": len(body), "mimeType": "text/html", "text": body},
                    "headersSize": -1,
                    "bodySize": -1,
                    "redirectURL": "",
                },
                "cache": {},
                "timings": {"send": 0, "wait": 0, "receive": 1},
            }
        )
        title = re.search(r"<title>(.*?)</title>", body)
        topo[url] = {"title": title.group(1) if title else "", "links": [], "forms": []}
    har = {
        "log": {"version": "1.2", "creator": {"name": "agentgym-tests", "version": "0"}, "entries": entries}
    }
    (root / "site.har").write_text(json.dumps(har), encoding="utf-8")
    site = {"origin": origin, "start_url": origin + "/", "pages": topo, "skipped": {}}
    (root / "site.json").write_text(json.dumps(site), encoding="utf-8")
    (root / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    return root


def chromium_children() -> list[int]:
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in parents.get(todo.pop(), []):
            todo.append(pid)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"chromium") and not any(a.startswith(b"--type=") for a in argv):
                found.append(pid)
    return found
