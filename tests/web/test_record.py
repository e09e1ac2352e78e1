"""Recording: the build script re-records a shipped site, and ``agentgym web record`` crawls a local
server (same origin, depth limit, robots.txt); the recording replays with the server stopped."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from agentgym.envs.web.build_sites import build_site, serve_dir, write_files
from agentgym.envs.web.site import Site
from agentgym.envs.web.sitegen import shop_site

from agentgym.cli import main


@pytest.mark.slow
def test_build_script_rerecords_the_wiki_like_the_committed_one(browser_ok, tmp_path):
    topo = build_site("wiki", tmp_path / "wiki", log=lambda s: None)
    shipped = Site.load("wiki")
    assert set(topo["pages"]) == set(shipped.pages)
    assert topo["pages"] == shipped.pages
    fresh = json.loads((tmp_path / "wiki" / "site.har").read_text())
    committed = json.loads(shipped.har.read_text())
    assert sorted(e["request"]["url"] for e in fresh["log"]["entries"]) == sorted(
        e["request"]["url"] for e in committed["log"]["entries"]
    )
    assert (tmp_path / "wiki" / "tasks.json").read_text() == (shipped.root / "tasks.json").read_text()


@pytest.mark.slow
def test_record_command_crawls_a_local_server_and_replays_offline(browser_ok, play, tmp_path, capsys):
    files, _ = shop_site()
    write_files(files, tmp_path / "www")
    out = tmp_path / "site"
    with serve_dir(tmp_path / "www") as base:
        code = main(["web", "record", base + "/", "--crawl-depth", "1", "--delay", "0.05", "--out", str(out)])
        printed = capsys.readouterr().out
    assert code == 0
    topo = json.loads((out / "site.json").read_text())
    pages = set(topo["pages"])
    assert base + "/c/kitchen.html" in pages and base + "/cart.html" in pages
    assert not any("/p/" in p for p in pages)  # product pages are two links deep
    assert topo["skipped"] == {base + "/private/staff.html": "disallowed by robots.txt"}
    assert "disallowed by robots.txt" in printed
    assert not any("example.org" in p for p in pages)

    # the server is stopped now: replay must not need it
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/", timeout=2)
    from agentgym.envs.web.teacher import WebTeacher

    import agentgym

    env = agentgym.make("web/replay-v0", site=str(out))
    try:
        tasks = env.task_ids(3)
        assert all(t.startswith("nav-") for t in tasks)
        for tid in tasks:
            traj = play(env, WebTeacher(), tid)
            assert traj.status == "ok" and traj.score == 1.0, tid
    finally:
        env.close()


def test_serve_answers_from_the_har_only(tmp_path):
    from threading import Thread

    from agentgym.envs.web.serve import make_server

    server = make_server("shop", 0)
    Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/p/1023.html", timeout=10) as resp:
            page = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/html")
        assert "<title>Cobalt Notebook</title>" in page
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/private/staff.html", timeout=10)
        assert err.value.code == 404 and b"not in the recording" in err.value.read()
    finally:
        server.shutdown()
        server.server_close()


def test_replay_env_without_a_site_says_what_to_pass():
    import agentgym

    with pytest.raises(ValueError, match="site=SITE_DIR"):
        agentgym.make("web/replay-v0")
    with pytest.raises(FileNotFoundError, match="agentgym web record"):
        agentgym.make("web/replay-v0", site="/nonexistent/site")
