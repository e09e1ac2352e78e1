"""code/python_functions-v0 on the real sandboxes: tools, teacher, scoring, statuses, loaders."""

import asyncio
import json

import pytest
from agentgym.envs.code.bwrap import BwrapSandbox
from agentgym.envs.code.env import CodeEnv
from agentgym.envs.code.grading import TestFormatError, compile_test, grade
from agentgym.envs.code.tasks import load_tasks, task_from_record

import agentgym
from agentgym.types import tool_call


def call(name, **args):
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, args)]}


def play(env, messages, task_id="clamp"):
    env.reset(seed=0, options={"task_id": task_id})
    out = None
    for m in messages:
        out = env.step(m)
        if out[2] or out[3]:
            break
    return out


@pytest.fixture
def env(bwrap_ready):
    e = agentgym.make("code/python_functions-v0", backend="bwrap", max_output=300, timeout=4)
    yield e
    e.close()


def test_shipped_tasks_are_many_graded_and_complete():
    tasks = load_tasks()
    assert len(tasks) >= 40
    assert {t.difficulty for t in tasks} == {1, 2, 3, 4, 5}
    for t in tasks:
        assert t.solution and t.tests and len(t.hidden_tests) >= 4
        assert set(t.hidden_tests) - set(t.tests)  # hidden tests go beyond what the prompt shows
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_tools_run_write_read_and_visible_tests(env):
    env.reset(seed=0, options={"task_id": "clamp"})
    obs, *_ = env.step(
        call("write_file", path="solution.py", content="def clamp(x, lo, hi):\n    return x\n")
    )
    assert obs[0]["content"].startswith("wrote")
    obs, *_ = env.step(call("read_file", path="solution.py"))
    assert "return x" in obs[0]["content"]
    obs, *_ = env.step(call("run_python", code="from solution import clamp\nprint(clamp(3, 0, 1))"))
    assert "exit code: 0" in obs[0]["content"] and "3" in obs[0]["content"]
    obs, *_ = env.step(call("run_tests"))
    text = obs[0]["content"]
    assert text.startswith("1/2 visible tests passed")
    assert "FAIL assert clamp(-3, 0, 10) == 0" in text and "clamp(-3, 0, 10) returned -3" in text
    obs, *_ = env.step(call("run_python", code="print('z' * 5000)"))
    assert "[truncated:" in obs[0]["content"] and len(obs[0]["content"]) < 400
    obs, *_ = env.step(call("write_file", path="../escape.py", content="x"))
    assert obs[0]["content"].startswith("Error: write_file") and "relative path" in obs[0]["content"]


def test_teacher_solves_and_scores_one(env):
    teacher = agentgym.resolve_policy("teacher", env)
    for task_id in ("clamp", "topo_sort", "evaluate_arithmetic"):
        env.reset(seed=0, options={"task_id": task_id})
        while True:
            _, reward, terminated, truncated, info = env.step(asyncio.run(teacher.act(env.trajectory, env)))
            if terminated or truncated:
                break
        assert terminated and reward == 1.0 and env.trajectory.status == "ok"
        assert env.trajectory.metadata["hidden_tests"]["passed"] == len(env.code_task.hidden_tests)


def test_nothing_submitted_scores_zero(env):
    env.reset(seed=0, options={"task_id": "clamp"})
    for _ in range(env.max_turns):
        obs, reward, terminated, truncated, _ = env.step({"role": "assistant", "content": "I am not sure."})
        if terminated or truncated:
            break
    assert truncated and reward == 0.0 and env.trajectory.status == "truncated"
    assert "call one of the tools" in obs[0]["content"]
    _, reward, terminated, _, _ = play(env, [call("submit")])
    assert terminated and reward == 0.0 and env.trajectory.status == "ok"


@pytest.mark.parametrize(
    "solution",
    [
        "while True:\n    pass\n",
        "import os\nos._exit(1)\n",
        "def clamp(x, lo, hi):\n    return clamp(x, lo, hi)\n",
    ],
    ids=["hangs", "dies", "recursion"],
)
def test_broken_submissions_score_zero_with_status_ok(env, solution):
    _, reward, terminated, _, info = play(
        env, [call("write_file", path="solution.py", content=solution), call("submit")]
    )
    assert terminated and reward == 0.0 and info["status"] == "ok"


def test_partial_solution_scores_the_fraction_passed(env):
    sol = "def clamp(x, lo, hi):\n    return min(x, hi)\n"  # forgets the lower bound
    _, reward, *_ = play(env, [call("write_file", path="solution.py", content=sol), call("submit")])
    task = env.code_task
    ns = {}
    exec(sol, ns)
    expected = sum(eval(t.removeprefix("assert "), dict(ns)) for t in task.hidden_tests) / len(
        task.hidden_tests
    )
    assert 0 < reward < 1 and reward == pytest.approx(expected)


class BrokenSandbox(BwrapSandbox):
    """A real bwrap sandbox pointed at an interpreter that does not exist: an infrastructure
    failure, deliberately (not a mock)."""

    def __init__(self, limits=None):
        super().__init__(limits, python="/usr/bin/no-such-python")


def test_sandbox_failure_is_env_error_not_zero(env):
    env.reset(seed=0, options={"task_id": "clamp"})
    env.step(call("write_file", path="solution.py", content=load_tasks()[0].solution))
    env.new_sandbox = lambda: BrokenSandbox(env.limits)
    _, reward, terminated, _, info = env.step(call("submit"))
    assert terminated and info["status"] == "env_error" and "hidden_tests" in info["verifier_errors"]


def test_grading_sees_only_the_submitted_files(bwrap_ready):
    tests = [compile_test("assert probe() == []", "probe")]
    sol = b"import os\ndef probe():\n    return sorted(set(os.listdir('/work')) - {'solution.py'})\n"
    r = grade({"solution.py": sol}, tests, entry_point="probe", new_sandbox=BwrapSandbox)
    assert r.score == 1.0


def test_test_format_errors_say_how_to_fix():
    with pytest.raises(TestFormatError, match="one assert per call"):
        compile_test("assert all(f(x) == x for x in range(3))", "f")
    with pytest.raises(TestFormatError, match="one assert statement"):
        compile_test("f(1)", "f")
    with pytest.raises(TestFormatError, match="call it directly"):
        compile_test("assert list(map(f, [1])) == [1]", "f")
    t = compile_test("assert raises(ValueError, lambda: f(-1))", "f")
    assert t.sites == ["f(-1)"] and t.check == "assert raises(ValueError, lambda: __V(0))"


def test_user_jsonl_with_mbpp_and_humaneval_records(bwrap_ready, tmp_path):
    mbpp = {
        "task_id": 7,
        "text": "Write a function to double every item of a list.",
        "code": "def double_all(xs):\n    return [2 * x for x in xs]\n",
        "test_list": ["assert double_all([1, 2]) == [2, 4]", "assert double_all([]) == []"],
        "challenge_test_list": ["assert double_all([-3]) == [-6]"],
        "test_setup_code": "",
    }
    humaneval = {
        "task_id": "Demo/0",
        "prompt": 'def shout(s: str) -> str:\n    """Upper-case s and add an exclamation mark."""\n',
        "canonical_solution": "    return s.upper() + '!'\n",
        "test": "METADATA = {}\n\ndef check(candidate):\n    assert candidate('hi') == 'HI!'\n    assert candidate('') == '!'\n",
        "entry_point": "shout",
    }
    native = {
        "task_id": "mine",
        "prompt": "Return the square.",
        "entry_point": "sq",
        "tests": ["assert sq(2) == 4"],
        "hidden_tests": ["assert sq(3) == 9", "assert sq(-1) == 1"],
        "solution": "def sq(x):\n    return x * x\n",
    }
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (mbpp, humaneval, native)) + "\n")
    env = CodeEnv(tasks=str(path), backend="bwrap")
    assert env.task_ids(3) == ["mbpp/7", "Demo/0", "mine"]
    teacher = agentgym.resolve_policy("teacher", env)
    for task_id in env.task_ids(3):
        env.reset(seed=0, options={"task_id": task_id})
        while not env.done:
            _, reward, *_ = env.step(asyncio.run(teacher.act(env.trajectory, env)))
        assert reward == 1.0, task_id
    env.close()
    assert task_from_record(humaneval).hidden_tests == [
        "assert shout('hi') == 'HI!'",
        "assert shout('') == '!'",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(native) + "\n" + json.dumps({"task_id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(TestFormatError, match=r"bad.jsonl:2: unrecognised task record"):
        load_tasks(bad)
    assert [t.task_id for t in load_tasks(bad, errors="skip")] == ["mine"]


def test_env_skips_records_that_cannot_load_and_counts_them(tmp_path, capfd):
    from agentgym.envs.code.env import CodeEnv

    good = {
        "task_id": "a",
        "prompt": "p",
        "entry_point": "f",
        "tests": [],
        "hidden_tests": ["assert f() == 1"],
    }
    bad = tmp_path / "mixed.jsonl"
    lines = [
        good,
        {"task_id": "x", "prompt": "p"},
        {**good, "task_id": "b"},
        "not json",
        {**good, "task_id": "a"},
    ]
    bad.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    env = CodeEnv(tasks=str(bad), backend="bwrap")
    assert [t.task_id for t in env.tasks] == ["a", "b"]
    err = capfd.readouterr().err
    assert "mixed.jsonl:2: unrecognised task record" in err
    assert "mixed.jsonl:4:" in err and "mixed.jsonl:5: duplicate task_id 'a'" in err
    assert "loaded 2 tasks, skipped 3 records" in err
    CodeEnv(tasks=str(bad), backend="bwrap")  # the same file again: read once, reported once
    assert "skipped" not in capfd.readouterr().err
    with pytest.raises(TestFormatError, match="mixed.jsonl:2"):
        CodeEnv(tasks=str(bad), backend="bwrap", strict=True)


@pytest.mark.slow
def test_teacher_scores_one_on_every_shipped_task(backend):
    """On both backends: primes_up_to's 1.5 MB of values once overflowed docker's environment."""
    from agentgym.rollout import run_rollouts, summarize

    n = len(load_tasks())
    trajs = run_rollouts(
        "code/python_functions-v0", "teacher", n=n, concurrency=4, env_kwargs={"backend": backend}
    )
    assert len({t.task_id for t in trajs}) == n
    assert [t.task_id for t in trajs if t.score != 1.0 or t.status != "ok"] == []
    assert summarize(trajs)["mean_score"] == 1.0
