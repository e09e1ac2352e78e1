"""WebReplayEnv in the real browser: teacher scores, observations for mistakes, dead browsers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
from agentgym.envs.web.browser import parse_snapshot
from agentgym.envs.web.teacher import WebTeacher

from agentgym.policy import RandomPolicy, resolve_policy
from agentgym.types import tool_call


def call(env, name, **args):
    out, reward, terminated, truncated, info = env.step(
        {"role": "assistant", "content": "", "tool_calls": [tool_call(name, args)]}
    )
    return (out[0]["content"] if out else ""), reward, terminated, truncated, info


def ref(env, role, name):
    return next(n.ref for n in parse_snapshot(env.snapshot) if n.role == role and n.name == name)


@pytest.mark.parametrize("task_id", ["price-1001", "brand-1034", "related-1012", "cart-1023", "cheaper-3"])
def test_teacher_solves_every_kind_of_shop_task(shop_env, play, task_id):
    teacher = resolve_policy("teacher", shop_env)
    traj = play(shop_env, teacher, task_id)
    assert traj.status == "ok" and traj.score == 1.0, traj.metadata
    assert traj.metadata["breakdown"]["pages_visited"] == 1.0
    assert all(len(m.get("tool_calls", [])) == 1 for m in traj.messages if m["role"] == "assistant")
    if task_id.startswith("cart"):
        assert traj.metadata["final_state"]["local_storage"]["cart"] == '{"1023":4}'


def test_teacher_solves_a_wiki_composite(wiki_env, play):
    task_id = "combo3-7"
    traj = play(wiki_env, WebTeacher(), task_id)
    assert traj.status == "ok" and traj.score == 1.0
    assert len(wiki_env.task.info["subtasks"]) == 3
    answer = traj.messages[-2]["tool_calls"][0]["function"]["arguments"]
    assert answer.count("|") == 2


def test_wrong_answers_and_wrong_cart_score_zero(shop_env):
    shop_env.reset(seed=0, options={"task_id": "price-1001"})
    *_, info = call(shop_env, "answer", text="1.00")
    assert info["score"] == 0.0 and info["status"] == "ok"
    shop_env.reset(seed=0, options={"task_id": "cart-1023"})
    call(shop_env, "goto", url="/p/1023.html")
    call(shop_env, "click", ref=ref(shop_env, "button", "Add to cart"))  # quantity 1, the task wants 4
    _, reward, terminated, _, info = call(shop_env, "answer", text="done")
    assert terminated and reward == 0.0
    shop_env.reset(seed=0, options={"task_id": "price-1001"})
    call(shop_env, "goto", url="/p/1001.html")
    price = re.search(r"\$([\d,]+\.\d\d)", shop_env.snapshot).group(1)
    _, reward, *_ = call(shop_env, "answer", text=f"  ${price} ")
    assert reward == 1.0  # normalised: currency sign, spaces and number format


def test_mistakes_are_observations_and_the_episode_goes_on(shop_env):
    shop_env.reset(seed=0, options={"task_id": "price-1001"})
    text, _, done, *_ = call(shop_env, "goto", url="/missing.html")
    assert "not in the cache" in text and "URL: http://shop.agentgym.test/\n" in text and not done
    text, *_ = call(shop_env, "goto", url="https://example.org/")
    assert "external URL" in text
    text, *_ = call(shop_env, "click", ref=ref(shop_env, "link", "Example Payments"))
    assert "payments.example.org/ is an external URL" in text and "Title: Harbor Lane Goods" in text
    text, *_ = call(
        shop_env, "click", ref=ref(shop_env, "link", "Staff area")
    )  # disallowed by robots.txt, never recorded
    assert "/private/staff.html is not in the cache" in text and "Went back" in text
    stale = ref(shop_env, "link", "Kitchen")
    call(shop_env, "click", ref=stale)
    text, *_ = call(shop_env, "click", ref=stale)
    assert f"no element with ref {stale!r}" in text and "Title: Kitchen department" in text
    text, *_ = call(shop_env, "select", ref=ref(shop_env, "link", "Home"), option="2")
    assert "is not a drop-down list" in text and "URL:" in text
    text, *_ = call(shop_env, "click", ref="e1; rm -rf /")
    assert "no element with ref 'e1; rm -rf /'" in text
    text, *_ = call(shop_env, "goto", url="/cart.html")
    text, *_ = call(shop_env, "click", ref=ref(shop_env, "button", "Empty cart"))
    assert "JavaScript confirm dialog said 'Remove every item from the cart?'" in text
    out, _, done, truncated, _ = shop_env.step({"role": "assistant", "content": "I think it is cheap."})
    assert "Please call one of the tools" in out[0]["content"] and not done and not truncated
    text, *_ = call(shop_env, "back")
    assert "Went back" in text and "Title: Kitchen department" in text


def test_search_box_works_offline(shop_env):
    shop_env.reset(seed=0, options={"task_id": "price-1001"})
    text, *_ = call(
        shop_env, "type", ref=ref(shop_env, "textbox", "Search products"), text="kettle", submit=True
    )
    assert 'heading "Results"' in text
    link = next(n for n in parse_snapshot(shop_env.snapshot) if n.role == "link" and "Kettle" in n.name)
    text, *_ = call(shop_env, "click", ref=link.ref)
    assert f"Title: {link.name}" in text


def test_random_policy_scores_near_zero(shop_env, play):
    policy = RandomPolicy(seed=3)
    scores = [play(shop_env, policy, tid, seed=i).score for i, tid in enumerate(shop_env.task_ids(6, seed=1))]
    assert sum(scores) / len(scores) < 0.2


def test_observation_is_truncated_to_the_configured_size(browser_ok):
    import agentgym

    env = agentgym.make("web/wiki-v0", max_obs_chars=300)
    try:
        obs, _ = env.reset(seed=0, options={"task_id": env.task_ids(1)[0]})
        assert (
            f"of {len(env.snapshot.splitlines())}; scroll('down') shows the next lines" in obs[1]["content"]
        )
        assert len(env.snapshot) > 300
    finally:
        env.close()
        env.close()


def test_a_dead_browser_is_env_error_and_the_next_episode_gets_a_new_one(browser_ok, play, browser_pids):
    import agentgym

    env = agentgym.make("web/shop-v0")
    try:
        env.reset(seed=0, options={"task_id": "price-1001"})
        first = env._browser
        pids = browser_pids()
        assert pids, "no browser process found"
        for pid in pids:  # only the browsers this test process started
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while first.is_connected() and time.time() < deadline:
            time.sleep(0.1)
        out, reward, terminated, truncated, info = env.step(
            {"role": "assistant", "content": "", "tool_calls": [tool_call("goto", {"url": "/help.html"})]}
        )
        assert terminated and reward == 0.0 and info["status"] == "env_error"
        assert env.trajectory.status == "env_error" and "browser died" in env.trajectory.metadata["env_error"]
        traj = play(env, WebTeacher(), "price-1001")
        assert env._browser is not first and traj.status == "ok" and traj.score == 1.0
    finally:
        env.close()


def test_async_api_on_the_callers_loop(shop_env, play):
    async def episode():
        await shop_env.areset(seed=0, options={"task_id": "related-1001"})
        teacher = WebTeacher()
        while True:
            msg = await teacher.act(shop_env.trajectory, shop_env)
            _, reward, terminated, truncated, _ = await shop_env.astep(msg)
            if terminated or truncated:
                await shop_env.aclose()
                return reward

    assert asyncio.run(episode()) == 1.0
    traj = play(shop_env, WebTeacher(), "price-1002")  # the sync API starts its own browser again
    assert traj.score == 1.0
