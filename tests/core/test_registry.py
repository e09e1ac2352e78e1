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
