"""The shipped sites' content, topology and tasks (no browser needed)."""

from __future__ import annotations

import html
import json

import pytest
from agentgym.envs.web.browser import parse_snapshot
from agentgym.envs.web.site import Site, normalize_answer
from agentgym.envs.web.sitegen import SITES


@pytest.mark.parametrize("name", list(SITES))
def test_generation_is_deterministic_and_large_enough(name):
    make, _ = SITES[name]
    files, tasks = make()
    again_files, again_tasks = make()
    assert files == again_files and tasks == again_tasks
    assert len([p for p in files if p.endswith(".html")]) >= 30
    assert len({t["id"] for t in tasks}) == len(tasks)


@pytest.mark.parametrize("name", list(SITES))
def test_committed_recording_matches_the_generator(name):
    site = Site.load(name)
    files, tasks = SITES[name][0]()
    assert site.tasks == json.loads(json.dumps(tasks))
    assert len(site.pages) >= 30
    har = json.loads(site.har.read_text())
    assert site.har.stat().st_size < 1_000_000
    recorded = {e["request"]["url"] for e in har["log"]["entries"]}
    for path in files:
        if path.endswith(".html") and not path.startswith("/private/"):
            url = site.url("/" if path == "/index.html" else path)
            assert url in recorded, url
            assert url in site.pages, url


@pytest.mark.parametrize("name", list(SITES))
def test_every_task_needs_steps_and_its_answer_is_on_the_last_page(name):
    site = Site.load(name)
    files, _ = SITES[name][0]()
    kinds = set()
    for task in site.tasks:
        kinds.add(task["kind"])
        visits = [s["visit"] for s in task["plan"] if "visit" in s]
        hops = site.shortest_path(site.start_url, visits[0])
        assert hops is not None and len(hops) >= 2, task["id"]
        if "cart" not in task and task["kind"] != "comparison":
            page = html.unescape(files[visits[-1]])
            assert task["answer"] in page or f"{float(task['answer']):,.2f}" in page, task["id"]
    assert {"fact", "multihop", "comparison"} <= kinds
    if name == "shop":
        assert "form" in kinds


def test_shortest_path_uses_the_link_graph():
    site = Site.load("shop")
    path = site.shortest_path("/", "/p/1023.html")
    assert [t for t, _ in path] == ["Office", "Cobalt Notebook"]
    assert site.shortest_path("/p/1023.html", "/p/1023.html") == []
    assert site.shortest_path("/", "/private/staff.html") is None


def test_composites_are_deterministic_and_distinct():
    site = Site.load("wiki")
    a = site.composite(3, 5)
    assert a == site.composite(3, 5) and len({t["id"] for t in a}) == 3
    assert a != site.composite(3, 6)
    with pytest.raises(ValueError, match="subtasks must be between"):
        site.composite(0, 1)


def test_normalize_answer():
    assert normalize_answer("$1,234.50") == normalize_answer("1234.5") == "1234.5"
    assert normalize_answer("  Rowan  & CO. ") == "rowan & co"
    assert normalize_answer("1,420 km") == normalize_answer("1420") == "1420"
    assert normalize_answer("4.0 of 5") == "4"
    assert normalize_answer("12.5") != normalize_answer("125")


def test_unknown_site_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="agentgym web record"):
        Site.load(tmp_path / "nothing")
    with pytest.raises(KeyError, match="ids look like"):
        Site.load("shop").task("nope")


def test_parse_snapshot_reads_frame_refs_and_quoted_names():
    snap = '- link "Say \\"hi\\"" [ref=f3e12] [cursor=pointer]:\n  - /url: /x.html\n- combobox "Quantity" [ref=f3e13]:'
    nodes = parse_snapshot(snap)
    assert [(n.role, n.name, n.ref, n.url) for n in nodes] == [
        ("link", 'Say "hi"', "f3e12", "/x.html"),
        ("combobox", "Quantity", "f3e13", None),
    ]
