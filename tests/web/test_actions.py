"""What a model can do wrong, or what a page can do, in WebReplayEnv: each is an observation.

The site here is written straight into a HAR (no recording), so these tests stay quick: JavaScript
dialogs, new tabs, drop-down lists, non-editable targets, nonsense refs and arguments, local-file
and data: links, failed form submissions, and no Chromium left behind by an async caller.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from agentgym.envs.web.browser import parse_snapshot

from agentgym.types import tool_call

ORIGIN = "http://edge.agentgym.test"
HOME = """<!doctype html><html><head><title>Edge home</title></head><body>
<h1>Edge home</h1><p>Plain text.</p>
<button onclick="alert('hello there')">Alert me</button>
<button onclick="document.getElementById('out').textContent = confirm('Sure?') ? 'confirmed' : 'cancelled'">Confirm me</button>
<button onclick="document.getElementById('out').textContent = 'prompted:' + prompt('Your name?', 'Ann')">Prompt me</button>
<div id="out">nothing yet</div>
<a href="/a.html" target="_blank">A in a new tab</a>
<button onclick="window.open('/b.html')">Open B</button>
<a href="/a.html">Page A</a>
<a href="file:///etc/passwd">Local file</a> <a href="data:text/html,<h1>hi</h1>">Data page</a>
<form action="/result.html"><label for="q">Query</label><input id="q" name="q">
<label for="col">Colour</label><select id="col" name="col"><option>Red</option><option>Dark green</option></select>
<button type="submit">Send</button></form>
</body></html>"""
PAGE_A = """<!doctype html><html><head><title>Page A</title></head><body>
<script>addEventListener('beforeunload', e => { e.preventDefault(); e.returnValue = ''; });</script>
<h1>Page A</h1><a href="/b.html">Page B</a></body></html>"""
PAGE_B = "<!doctype html><html><head><title>Page B</title></head><body><h1>Page B</h1></body></html>"
LONG = (
    "<!doctype html><html><head><title>Long</title></head><body><ul>"
    + "".join(f"<li>line number {i}</li>" for i in range(400))
    + "</ul></body></html>"
)
HANG = """<!doctype html><html><head><title>Hang</title></head><body>
<button onclick="while (true) {}">Spin forever</button></body></html>"""
TASK = {"id": "home", "kind": "fact", "prompt": "Name the home page.", "answer": "Edge home", "plan": []}


@pytest.fixture(scope="module")
def edge_env(tmp_path_factory, site_writer, need_browser):
    import agentgym

    pages = {"/": HOME, "/a.html": PAGE_A, "/b.html": PAGE_B, "/long.html": LONG, "/hang.html": HANG}
    root = site_writer(tmp_path_factory.mktemp("edge"), ORIGIN, pages, [TASK])
    env = agentgym.make("web/replay-v0", site=str(root), max_obs_chars=2000, max_turns=200)
    yield env
    env.close()


def call(env, name, raw=None, **args):
    tc = tool_call(name, args)
    if raw is not None:
        tc["function"]["arguments"] = raw
    out, _, terminated, _, info = env.step({"role": "assistant", "content": "", "tool_calls": [tc]})
    assert not terminated or name == "answer", info
    return out[0]["content"]


def ref(env, role, name):
    return next(n.ref for n in parse_snapshot(env.snapshot) if n.role == role and n.name == name)


def fresh(env):
    env.reset(seed=0, options={"task_id": "home"})
    return env


def test_javascript_dialogs_are_reported_and_accepted(edge_env):
    env = fresh(edge_env)
    text = call(env, "click", ref=ref(env, "button", "Alert me"))
    assert "JavaScript alert dialog said 'hello there'; it was accepted" in text
    text = call(env, "click", ref=ref(env, "button", "Confirm me"))
    assert "confirm dialog said 'Sure?'" in text and "confirmed" in text
    text = call(env, "click", ref=ref(env, "button", "Prompt me"))
    assert "prompt dialog said 'Your name?'" in text and "prompted:" in text
    call(env, "click", ref=ref(env, "link", "Page A"))
    text = call(env, "click", ref=ref(env, "link", "Page B"))  # Page A asks before it is left
    assert "beforeunload dialog" in text and "Title: Page B" in text


def test_new_tabs_open_in_the_one_tab(edge_env):
    env = fresh(edge_env)
    text = call(env, "click", ref=ref(env, "link", "A in a new tab"))
    assert f"URL: {ORIGIN}/a.html" in text and "Title: Page A" in text
    call(env, "back")
    text = call(env, "click", ref=ref(env, "button", "Open B"))
    assert f"URL: {ORIGIN}/b.html" in text
    assert len(env._context.pages) == 1


def test_back_on_the_first_page_stays_on_the_site(edge_env):
    env = fresh(edge_env)
    text = call(env, "back")
    assert text.startswith("There is no previous page.") and f"URL: {ORIGIN}/\n" in text
    text = call(env, "goto", url="/b.html")
    assert "Title: Page B" in text
    text = call(env, "back")
    assert text.startswith("Went back.") and "Title: Edge home" in text


def test_drop_down_lists(edge_env):
    env = fresh(edge_env)
    colour = ref(env, "combobox", "Colour")
    t0 = time.perf_counter()
    text = call(env, "select", ref=colour, option="Purple")
    assert time.perf_counter() - t0 < 2  # answered at once, not after the action timeout
    assert "has no option 'Purple'; its options are: 'Red', 'Dark green'" in text
    text = call(env, "select", ref=colour, option="dark  GREEN")
    assert text.startswith(f"Selected 'Dark green' in {colour}")
    text = call(env, "select", ref=ref(env, "textbox", "Query"), option="Red")
    assert "is not a drop-down list" in text


def test_typing_into_what_is_not_a_field(edge_env):
    env = fresh(edge_env)
    for role, name in [("paragraph", ""), ("link", "Page A"), ("button", "Send")]:
        text = call(env, "type", ref=ref(env, role, name), text="hello")
        assert text.startswith("Error: type failed") and "URL:" in text
    text = call(env, "type", ref=ref(env, "textbox", "Query"), text="x" * 50_000)
    assert len(text) < 2000 + 800 and "(50000 characters)" in text


def test_nonsense_refs_and_arguments(edge_env):
    env = fresh(edge_env)
    for bad in ["", "e99999", "a[href='/a.html']", "#out", "e1; drop"]:
        text = call(env, "click", ref=bad)
        assert "no element with ref" in text and "URL:" in text, bad
    assert "must be a string, got None" in call(env, "click", ref=None)
    assert "must be a string, got 5" in call(env, "type", ref=5, text="x")
    assert "must be a string" in call(env, "goto", url=["/a.html"])
    assert "missing required argument(s) ['ref']" in call(env, "click", raw="")
    assert "not valid JSON" in call(env, "click", raw="{ref: e1")
    assert "must be a JSON object" in call(env, "select", raw="[1, 2]")


def test_local_files_and_odd_schemes_are_never_opened(edge_env):
    env = fresh(edge_env)
    for url in ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,<h1>x</h1>", "chrome://version"]:
        text = call(env, "goto", url=url)
        assert text.startswith("Cannot open") and f"URL: {ORIGIN}/\n" in text
    for name in ["Local file", "Data page"]:
        text = call(env, "click", ref=ref(env, "link", name))
        assert "not a page of the site; nothing was opened" in text
    assert "root:" not in json.dumps(env.trajectory.messages)


def test_a_form_sent_to_an_unrecorded_page_goes_back(edge_env):
    env = fresh(edge_env)
    call(env, "type", ref=ref(env, "textbox", "Query"), text="kettle")
    text = call(env, "click", ref=ref(env, "button", "Send"))
    assert f"{ORIGIN}/result.html?q=kettle&col=Red is not in the cache" in text
    assert "Went back." in text and "Title: Edge home" in text


def test_long_snapshots_are_shown_in_windows_that_scroll_and_find_move(edge_env):
    env = fresh(edge_env)
    text = call(env, "goto", url="/long.html")
    lines = env.snapshot.splitlines()
    body, _, note = text.rpartition("\n... (lines 1-")
    assert len(env.snapshot) > 2000 and note.endswith("find(text) searches the whole page)")
    shown = body.split("Title: ", 1)[1].splitlines()[1:]
    assert shown == lines[: len(shown)] and len("\n".join(shown)) <= 2000  # whole lines, within the window
    down = call(env, "scroll", direction="down")
    first = down.split("Title: ", 1)[1].splitlines()[1]
    assert first in lines and lines.index(first) > 0 and "scroll('up')" in down
    assert call(env, "scroll", direction="top").split("Title: ", 1)[1].splitlines()[1] == lines[0]
    last = lines[-1].strip()
    found = call(env, "find", text=last[-12:])
    assert "lines match" in found and f"line {len(lines)}:" in found
    assert (
        found.rstrip().endswith(
            f"of {len(lines)}; scroll('up') the previous ones, find(text) searches the whole page)"
        )
        or lines[-1] in found
    )
    assert "is not on this page" in call(env, "find", text="no such words anywhere zzz")


def test_a_page_that_stops_responding_is_env_error_not_an_exception(edge_env):
    env = fresh(edge_env)
    call(env, "goto", url="/hang.html")
    out, reward, terminated, truncated, info = env.step(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [tool_call("click", {"ref": ref(env, "button", "Spin forever")})],
        }
    )
    assert terminated and not truncated and reward == 0.0 and info["status"] == "env_error"
    assert "the page stopped responding" in env.trajectory.metadata["env_error"]
    assert env.trajectory.status == "env_error"
    obs, _ = env.reset(seed=0, options={"task_id": "home"})  # a fresh context: the next episode is fine
    assert "Title: Edge home" in obs[-1]["content"]


def test_a_browser_left_by_an_async_caller_is_stopped_by_close(
    browser_ok, tmp_path, site_writer, browser_pids
):
    import agentgym

    root = site_writer(tmp_path / "edge", ORIGIN, {"/": HOME}, [TASK])
    _browser_processes = browser_pids
    env = agentgym.make("web/replay-v0", site=str(root))
    before = set(_browser_processes())

    async def episode():
        await env.areset(seed=0, options={"task_id": "home"})
        raise RuntimeError("the caller failed mid-episode and never called aclose()")

    with pytest.raises(RuntimeError):
        asyncio.run(episode())
    assert set(_browser_processes()) - before, "the episode's browser should still be running here"
    env.close()
    deadline = time.time() + 10
    while set(_browser_processes()) - before and time.time() < deadline:
        time.sleep(0.2)
    assert not set(_browser_processes()) - before
    env.reset(seed=0, options={"task_id": "home"})  # and the env still works, with a new browser
    assert "Title: Edge home" in env.trajectory.messages[-1]["content"]
    env.close()
    deadline = time.time() + 10
    while set(_browser_processes()) - before and time.time() < deadline:
        time.sleep(0.2)
    assert not set(_browser_processes()) - before


def test_a_view_scrolled_in_one_episode_does_not_carry_into_the_next(tmp_path, site_writer, need_browser):
    import agentgym

    root = site_writer(tmp_path / "edge", ORIGIN, {"/": HOME, "/a.html": PAGE_A}, [TASK])
    env = agentgym.make("web/replay-v0", site=str(root), max_obs_chars=200)
    try:
        first, _ = env.reset(seed=0, options={"task_id": "home"})
        assert "(lines 1-" in first[-1]["content"]  # the home page does not fit in 200 characters
        assert "(lines 1-" not in call(env, "scroll", direction="down")
        again, _ = env.reset(seed=0, options={"task_id": "home"})  # the same start page
        assert again[-1]["content"] == first[-1]["content"]
    finally:
        env.close()
