import subprocess
import sys
import textwrap
import warnings

import gymnasium
import pytest

import agentgym
from agentgym import registry


def test_make_list_and_gymnasium_ids():
    assert "toy/calculator-v0" in agentgym.list_envs()
    env = agentgym.make("toy/calculator-v0", difficulty=1)
    assert env.env_id == "toy/calculator-v0" and env.difficulty == 1
    for gid in ("agentgym/toy.calculator-v0", "agentgym:toy/calculator-v0"):
        genv = gymnasium.make(gid)
        assert genv.unwrapped.env_id == "toy/calculator-v0"
        genv.close()
    # the module prefix imports agentgym itself: it works in a fresh process, nothing imported first
    code = "import gymnasium; print(gymnasium.make('agentgym:toy/calculator-v0', difficulty=2).unwrapped.difficulty)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr[-2000:]


def test_unknown_id_says_what_to_do():
    with pytest.raises(KeyError) as e:
        agentgym.make("toy/calculater-v0")
    assert "Did you mean toy/calculator-v0" in str(e.value) and "agentgym list" in str(e.value)
    with pytest.raises(ValueError, match="family/name-v0"):
        agentgym.register("nofamily", "x:Y")


def test_missing_dependency_names_the_extra(tmp_path):
    agentgym.register("test/needs-extra-v0", "agentgym_no_such_module:Env", requires="games")
    try:
        with pytest.raises(ImportError, match=r"pip install 'agentgym\[games\]'"):
            agentgym.make("test/needs-extra-v0")
    finally:
        registry._REGISTRY.pop("test/needs-extra-v0")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A real distribution (a dist-info folder with entry_points.txt) on sys.path, found through
    importlib.metadata exactly as an installed third-party package would be."""
    pkg = tmp_path / "shelf_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            '''
            import agentgym
            from agentgym.types import Task

            class EchoEnv(agentgym.ToolEnv):
                @agentgym.tool
                def echo(self, text: str) -> str:
                    """Echo text back."""
                    return text

                def load_task(self, task_id):
                    return Task(task_id or "0", prompt="say hi")

                def task_ids(self, n, seed=0):
                    return [str(i) for i in range(n)]

            def register():
                agentgym.register("plugin/echo-v0", "shelf_plugin:EchoEnv")
            '''
        )
    )
    dist = tmp_path / "shelf_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shelf-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[agentgym.envs]\nshelf = shelf_plugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload_plugins()
    try:
        assert "plugin/echo-v0" in agentgym.list_envs()
        env = agentgym.make("plugin/echo-v0")
        env.reset(seed=0)
        obs, *_ = env.step(
            {
                "role": "assistant",
                "content": '<tool_call>{"name": "echo", "arguments": {"text": "hi"}}</tool_call>',
            }
        )
        assert obs[0]["content"] == "hi"
    finally:
        registry._REGISTRY.pop("plugin/echo-v0", None)


def test_broken_plugin_does_not_break_the_registry(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[agentgym.envs]\nbroken = no_such_module_anywhere:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload_plugins()
    assert "toy/calculator-v0" in agentgym.list_envs()
    assert "broken" in registry.plugin_errors


def test_import_is_light():
    code = "import sys, agentgym; agentgym.list_envs(); print(sorted(m for m in ('torch', 'vllm', 'playwright', 'pyspiel', 'transformers', 'docker') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registering_an_id_again_replaces_it_and_warns_when_it_changes():
    agentgym.register("test/again-v0", "agentgym.envs.toy:CalculatorEnv", difficulty=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            agentgym.register("test/again-v0", "agentgym.envs.toy:CalculatorEnv", difficulty=1)  # same
        with pytest.warns(UserWarning, match=r"'test/again-v0' registered again: .*\{'difficulty': 1\}"):
            agentgym.register("test/again-v0", "agentgym.envs.toy:CalculatorEnv", difficulty=3)
        assert agentgym.make("test/again-v0").difficulty == 3
        assert gymnasium.make("agentgym/test.again-v0").unwrapped.difficulty == 3
    finally:
        registry._REGISTRY.pop("test/again-v0")


ONE_FILE_ENV = '''\
from agentgym import Task, ToolEnv, tool


def said_it(traj, task):  # a plain function is a verifier
    return float(traj.messages[-1].get("content", "").strip() == task.answer)


class Echo(ToolEnv):
    verifier = said_it

    @tool
    def shout(self, text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    def task_ids(self, n, seed=0):
        return [f"w{seed + i}" for i in range(n)]

    def load_task(self, task_id):
        return Task(task_id=task_id, prompt=f"Say HELLO {task_id}", answer=f"HELLO {task_id}")
'''


def test_an_env_in_one_file_runs_from_the_cli_with_no_registration(tmp_path, capsys):
    import json

    from agentgym.cli import main

    assert len(ONE_FILE_ENV.splitlines()) <= 20
    path = tmp_path / "myenv.py"
    path.write_text(ONE_FILE_ENV)
    ref = f"{path}:Echo"
    out = tmp_path / "x.jsonl"
    assert main(["rollout", "--env", ref, "--policy", "random", "--n", "4", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["task_id"] for r in records) == ["w0", "w1", "w2", "w3"]
    assert all(r["env"] == ref and r["status"] == "ok" and r["env_kwargs"] == {} for r in records)
    assert [t["function"]["name"] for t in records[0]["tools"]] == ["shout"]
    capsys.readouterr()
    assert main(["eval", "--env", ref, "--policy", "random", "--n", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["env"] == ref and summary["statuses"]["ok"] == 4

    # the plain-function verifier scores: a right answer 1, a wrong one 0
    env = agentgym.make(ref, max_turns=2)
    for reply, want in (("HELLO w7", 1.0), ("hello", 0.0)):
        env.reset(options={"task_id": "w7"})
        _, reward, terminated, _, _ = env.step({"role": "assistant", "content": reply})
        assert terminated and reward == want
    assert env.trajectory.env_kwargs == {"max_turns": 2}


def test_an_env_class_by_module_path_and_bad_references(tmp_path, monkeypatch):
    (tmp_path / "shoutpkg").mkdir()
    (tmp_path / "shoutpkg" / "__init__.py").write_text("")
    (tmp_path / "shoutpkg" / "envs.py").write_text(ONE_FILE_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = agentgym.make("shoutpkg.envs:Echo")
    assert env.env_id == "shoutpkg.envs:Echo" and env.task_ids(2, seed=5) == ["w5", "w6"]
    with pytest.raises(KeyError, match="has no ToolEnv subclass 'Nope'; it has Echo"):
        agentgym.make("shoutpkg.envs:Nope")
    with pytest.raises(KeyError, match="no file"):
        agentgym.make(str(tmp_path / "missing.py") + ":Echo")
    with pytest.raises(KeyError, match="cannot import module"):
        agentgym.make("no_such_module_here:Echo")


def test_an_env_that_loads_tasks_must_name_them(tmp_path, capsys):
    """Without task_ids, made-up ids would reach load_task silently: the class is refused where
    it is defined, and the CLI says what to add."""
    from agentgym import Task, ToolEnv
    from agentgym.cli import main

    with pytest.raises(TypeError, match=r"NoIds defines load_task but not task_ids: add `def task_ids"):

        class NoIds(ToolEnv):
            def load_task(self, task_id):
                return Task(task_id=task_id, prompt="hi")

    path = tmp_path / "noids.py"
    path.write_text(
        ONE_FILE_ENV.replace("    def task_ids(self, n, seed=0):\n", "    def unused(self, n, seed=0):\n")
    )
    out = tmp_path / "x.jsonl"
    assert (
        main(["rollout", "--env", f"{path}:Echo", "--policy", "random", "--n", "2", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert "failed to load: TypeError: Echo defines load_task but not task_ids" in err and not out.exists()


def test_players_that_know_an_env_are_data(tmp_path, monkeypatch):
    """An env lists its players by name (``ToolEnv.policies``); ``register_policy`` adds one for
    an env id from outside the class, imported only when used; an unknown name lists the rest."""
    from agentgym.rollout import run_rollouts

    (tmp_path / "oracle_mod.py").write_text(
        textwrap.dedent(
            """
            from agentgym.envs.toy import ScriptedCalculator

            made = []

            def oracle(spec, env):
                made.append(spec.get("tag", "", str))
                return ScriptedCalculator()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(agentgym.policy, "_REGISTERED", {})  # this test's registrations end with it
    from agentgym.envs.toy import CalculatorEnv

    assert set(CalculatorEnv.policies) == {"scripted", "teacher"}
    agentgym.register_policy("toy/calculator-v0", "oracle", "oracle_mod:oracle")
    trajs = run_rollouts("toy/calculator-v0", "oracle:tag=x", n=3)
    import oracle_mod

    assert oracle_mod.made == ["x"] and [t.score for t in trajs] == [1.0] * 3
    with pytest.raises(ValueError, match="known here: scripted, teacher, oracle, random"):
        agentgym.resolve_policy("solver", agentgym.make("toy/calculator-v0"))
    with pytest.raises(ValueError, match="'module:function'"):
        agentgym.register_policy("toy/calculator-v0", "bad", "no_colon")
