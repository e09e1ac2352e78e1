"""The README's example environment really works."""

import re
import sys
import types
from pathlib import Path

from gymnasium.utils.env_checker import check_env

from agentgym.registry import _REGISTRY
from agentgym.rollout import run_rollouts


def test_readme_example_env(monkeypatch):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    module = types.ModuleType("readme_example")
    monkeypatch.setitem(sys.modules, "readme_example", module)
    exec(compile(code, "README.md", "exec"), module.__dict__)
    try:
        env = module.env
        check_env(env, skip_render_check=True)
        env.reset(seed=0, options={"task_id": "peru"})
        obs, *_ = env.step(
            {
                "role": "assistant",
                "content": '<tool_call>{"name": "lookup", "arguments": {"country": "Peru"}}</tool_call>',
            }
        )
        assert obs[0]["content"] == "Lima"
        _, reward, terminated, _, info = env.step({"role": "assistant", "content": "Lima"})
        assert terminated and reward == 1.2 and info["breakdown"] == {"correct": 1.0, "format_reward": 1.0}
        trajs = run_rollouts("demo/capitals-v0", "random", n=6)
        assert len(trajs) == 6 and {t.task_id for t in trajs} == {"france", "peru", "kenya"}
    finally:
        _REGISTRY.pop("demo/capitals-v0", None)
