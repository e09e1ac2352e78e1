"""Information-seeking tasks from a site's own pages: facts from tables and definition lists,
hops and comparisons; no answer in its question; the teacher solves them in the real browser."""

import json

import pytest
from agentgym.envs.web.facts import Fact, generate_tasks, page_facts
from agentgym.envs.web.site import Site, normalize_answer

PAGE = """<html><head><title>Kettles</title><script>var x = "<table><tr><th>a</th></tr></table>";</script></head>
<body><h1>Cobalt Kettle</h1>
<table><tr><th>Brand</th><td>Quillon</td></tr><tr><th>Capacity</th><td>1.7 litres</td></tr>
<tr><th>Notes</th><td>a very long description that goes on and on well past any short answer</td></tr></table>
<table><tr><th>Model</th><th>Watts</th><th>Colour</th></tr>
<tr><td>K1</td><td>2200</td><td>blue</td></tr><tr><td>K2</td><td>1800</td><td>red</td></tr></table>
<dl><dt>Warranty</dt><dd>2 years</dd><dt>Made in</dt><dd>Portugal</dd></dl>
</body></html>"""


def test_page_facts_reads_header_tables_two_column_tables_and_definition_lists():
    facts = set(page_facts("http://x/k.html", PAGE))
    assert Fact("http://x/k.html", "Cobalt Kettle", "Brand", "Quillon", True) in facts
    assert Fact("http://x/k.html", "Cobalt Kettle", "Capacity", "1.7 litres", True) in facts
    assert Fact("http://x/k.html", "K2", "Watts", "1800") in facts
    assert Fact("http://x/k.html", "K1", "Colour", "blue") in facts
    assert Fact("http://x/k.html", "Cobalt Kettle", "Made in", "Portugal", True) in facts
    assert not any(f.attribute == "Notes" for f in facts)  # long values make no exact-match answer
    assert not any(f.attribute == "a" for f in facts)  # text inside <script> is no table


def test_generated_tasks_on_the_wiki_never_hold_their_answer():
    site = Site.load("wiki", generated=True)
    tasks = site.tasks
    kinds = {t["kind"] for t in tasks}
    assert kinds == {"fact", "hop", "compare"}, kinds
    assert len({t["id"] for t in tasks}) == len(tasks)
    for t in tasks:
        prompt = normalize_answer(t["prompt"])
        for a in t["answers"]:
            assert f" {normalize_answer(a)} " not in f" {prompt} ", t
        assert 1 <= len(t["plan"]) <= 2
        for step in t["plan"]:
            path = site.shortest_path(site.start_url, step["visit"])
            assert path is not None and 1 <= len(path) <= 3, t
    assert all(len(t["plan"]) == 2 for t in tasks if t["kind"] in ("hop", "compare"))
    assert generate_tasks(site) == tasks  # the same site gives the same tasks


def test_a_fact_whose_answer_is_in_its_question_is_refused(tmp_path):
    from tests.web.conftest import write_site

    start = '<html><head><title>Rivers</title></head><body><h1>Rivers</h1><a href="/blue.html">Blue</a></body></html>'
    page = (
        "<html><head><title>Blue River</title></head><body><h1>Blue River</h1>"
        "<table><tr><th>Colour</th><td>Blue</td></tr><tr><th>Length</th><td>210 km</td></tr></table></body></html>"
    )
    root = write_site(tmp_path / "s", "http://rivers.test", {"/": start, "/blue.html": page}, [])
    (root / "tasks.json").unlink(missing_ok=True)
    topo = json.loads((root / "site.json").read_text())
    topo["pages"]["http://rivers.test/"]["links"] = [["Blue", "http://rivers.test/blue.html"]]
    (root / "site.json").write_text(json.dumps(topo))
    tasks = Site.load(root).tasks
    assert [t["answers"] for t in tasks] == [["210 km"]]  # "Blue" would answer the question it is in


@pytest.mark.slow
def test_the_teacher_solves_generated_tasks_in_the_browser(browser_ok):
    from agentgym.rollout import run_rollouts, summarize

    trajs = run_rollouts(
        "web/replay-v0", "teacher", n=12, env_kwargs={"site": "wiki", "generated_tasks": True}, concurrency=2
    )
    s = summarize(trajs)
    assert s["statuses"]["env_error"] == 0 and s["mean_score"] == 1.0, s
    assert len(trajs) == 12 and all(t.status == "ok" and t.score == 1.0 for t in trajs)


def test_the_recorded_python_docs_ship_with_tasks_from_their_pages():
    site = Site.load("pydocs")
    assert len(site.pages) == 33 and site.har.exists() and site.har.suffix == ".har"
    assert site.tasks == generate_tasks(site)  # tasks.json is the generator's output, unedited
    kinds = {t["kind"] for t in site.tasks}
    assert {"fact", "compare"} <= kinds and len(site.tasks) >= 200
    for t in site.tasks:
        assert all(
            f" {normalize_answer(a)} " not in f" {normalize_answer(t['prompt'])} " for a in t["answers"]
        )
    array_f = [t for t in site.tasks if t["prompt"].endswith("what is the Minimum size in bytes of 'f'?")]
    assert [t["answers"] for t in array_f] == [["4"]]  # the array module's type-code table


@pytest.mark.slow
def test_the_teacher_solves_the_python_docs_tasks(browser_ok):
    """The must-show run on the real site: every episode ok, every answer right."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "agentgym.cli", "eval", "--env", "web/pydocs-v0", "--policy", "teacher"]
    out = subprocess.run([*cmd, "--n", "50", "--json"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads(out.stdout)
    assert s["episodes"] == 50 and s["statuses"]["env_error"] == 0 and s["mean_score"] == 1.0, s


def test_generated_tasks_are_made_once_per_recording(monkeypatch):
    """Each env instance of a run loads the site; the tasks made from its pages are made once and
    handed out as copies (an env that edits its list cannot change another's)."""
    from agentgym.envs.web import facts, site

    calls = []
    real = facts.generate_tasks
    monkeypatch.setattr(facts, "generate_tasks", lambda s: calls.append(s.name) or real(s))
    site._GENERATED.clear()
    first = Site.load("wiki", generated=True)
    second = Site.load("wiki", generated=True)
    assert calls == ["wiki"]
    assert first.tasks == second.tasks and len(first.tasks) > 10
    first.tasks[0]["question"] = "changed"
    assert Site.load("wiki", generated=True).tasks[0] == second.tasks[0] != first.tasks[0]
