"""Shared fixtures of the web env tests: one env (one browser) per shipped site for the session."""

from __future__ import annotations

import asyncio

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
