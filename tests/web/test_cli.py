"""``agentgym generate teacher``, ``--policy teacher`` through the rollout runner, and check_env."""

from __future__ import annotations

import pytest

from agentgym.cli import main
from agentgym.types import load_trajectories


@pytest.mark.slow
def test_generate_teacher_writes_verified_composites(browser_ok, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert (
        main(
            ["generate", "teacher", "--env", "web/wiki-v0", "--n", "3", "--subtasks", "2", "--out", str(out)]
        )
        == 0
    )
    assert "wrote 3 verified trajectories" in capsys.readouterr().out
    trajs = load_trajectories(out)
    assert len(trajs) == 3 and len({t.task_id for t in trajs}) == 3
    for t in trajs:
        assert t.env == "web/wiki-v0" and t.status == "ok" and t.score == 1.0
        assert t.metadata["generator"] == "teacher" and t.metadata["subtasks"] == 2
        assert t.messages[-2]["tool_calls"][0]["function"]["name"] == "answer"


def test_generate_teacher_refuses_bad_input(tmp_path, capsys):
    assert (
        main(
            ["generate", "teacher", "--env", "games/tic_tac_toe-v0", "--n", "2", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "serves web envs" in capsys.readouterr().err


@pytest.mark.slow
def test_teacher_policy_in_the_rollout_runner(browser_ok):
    from agentgym.rollout import run_rollouts

    trajs = run_rollouts("web/shop-v0", "teacher", n=4, concurrency=2, seed=5)
    assert [t.status for t in trajs] == ["ok"] * 4
    assert all(t.score == 1.0 for t in trajs)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["web/shop-v0", "web/wiki-v0"])
def test_check_env_and_same_seed_same_transcript(request, play, env_id):
    from agentgym.envs.web.teacher import WebTeacher
    from gymnasium.utils.env_checker import check_env

    env = request.getfixturevalue("shop_env" if env_id == "web/shop-v0" else "wiki_env")
    try:
        check_env(env, skip_render_check=True)
        tid = env.task_ids(1, seed=2)[0]
        a = play(env, WebTeacher(), tid, seed=9).messages
        b = play(env, WebTeacher(), tid, seed=9).messages
        assert a == b and len(a) > 5
    finally:
        env.close()
        env.close()


@pytest.mark.slow
def test_recorded_site_records_describe_themselves_and_train_without_env_kwargs(browser_ok, tmp_path, capsys):
    """`agentgym rollout` on web/replay-v0 writes each record's tool schemas and env kwargs, so
    `agentgym train sft` on them needs no `--env-kwargs` (the env, which needs a site, is never made)."""
    import json

    from agentgym.policies.tiny import build_tiny_model

    out = tmp_path / "web.jsonl"
    args = [
        "rollout",
        "--env",
        "web/replay-v0",
        "--env-kwargs",
        "site=shop",
        "max_obs_chars=200",
        "--policy",
        "teacher",
    ]
    assert main([*args, "--n", "2", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] == "ok" and r["score"] == 1.0 for r in records)
    for r in records:
        assert r["env_kwargs"]["site"] == "shop"
        names = {t["function"]["name"] for t in r["tools"]}
        assert {"goto", "click", "answer"} <= names, names
    capsys.readouterr()

    model = build_tiny_model(tmp_path / "tiny", size="tiny", seed=0)
    train = ["train", "sft", "--model", str(model), "--data", str(out), "--max-steps", "1"]
    assert (
        main(
            [
                *train,
                "--batch-size",
                "2",
                "--micro-batch-size",
                "2",
                "--max-length",
                "4096",
                "--output-dir",
                str(tmp_path / "sft"),
            ]
        )
        == 0
    )
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("agent_tokens", 0) > 0 for m in metrics), metrics
