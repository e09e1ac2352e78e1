"""Turn-level credit in GRPO (``advantage``: trajectory, turn, gigpo), checked by hand: per-turn
returns, their group normalisation, GiGPO's step groups, and the per-token advantages they give."""

import json
import math
import zlib

import pytest
import torch
from agentgym.trainers import losses as L
from agentgym.trainers.batch import collate, to_sequence
from agentgym.trainers.config import GRPOConfig
from agentgym.trainers.grpo import make_groups, turn_anchors, turn_rewards

from agentgym.types import Trajectory


def _two_turns(task_id, score, mask, turn_rewards=None, tool_reply="5"):
    """A 2-turn trajectory: prompt, a call, the tool's reply, an answer; ``mask`` has two spans."""
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "call"},
        {"role": "tool", "name": "calculator", "content": tool_reply},
        {"role": "assistant", "content": "answer"},
    ]
    metadata = {} if turn_rewards is None else {"turn_rewards": turn_rewards}
    return Trajectory(
        messages=messages,
        env="e",
        task_id=task_id,
        score=score,
        metadata=metadata,
        tokens=list(range(10, 10 + len(mask))),
        mask=mask,
        logprobs=[-0.5 * m for m in mask],
    )


def test_turn_mode_gives_known_per_token_advantages():
    # gamma 0.5. A: turn rewards [0.5, 0] + score 1 at the last turn -> rewards [0.5, 1.0],
    #   returns G2 = 1.0, G1 = 0.5 + 0.5 * 1.0 = 1.0
    # B: turn rewards [0, 0.5] + score 0 -> returns G2 = 0.5, G1 = 0 + 0.5 * 0.5 = 0.25
    # pooled over the group's four turns: mean (1 + 1 + 0.25 + 0.5) / 4 = 0.6875
    # scale none: A -> [0.3125, 0.3125], B -> [-0.4375, -0.1875]
    a = _two_turns("t", 1.0, [0, 1, 1, 0, 1], [0.5, 0.0])
    b = _two_turns("t", 0.0, [0, 1, 0, 1, 1], [0.0, 0.5])
    assert turn_rewards(a) == [0.5, 1.0] and L.discounted_returns(turn_rewards(b), 0.5) == [0.25, 0.5]
    members, counts = make_groups([a, b], "none", "turn", gamma=0.5)
    assert counts == {"groups": 1}
    adv = [x for _, x in members]
    assert adv == [[0.3125, 0.3125], [-0.4375, -0.1875]]
    seqs = [to_sequence(t, advantage=x) for t, x in members]
    assert seqs[0].token_advantages == [0.0, 0.3125, 0.3125, 0.0, 0.3125]
    assert seqs[1].token_advantages == [0.0, -0.4375, 0.0, -0.1875, -0.1875]
    batch = collate(seqs, pad_id=0)
    # shifted by one like the loss mask; only agent tokens carry an advantage
    assert batch.advantages.tolist() == [[0.3125, 0.3125, 0.0, 0.3125], [-0.4375, 0.0, -0.1875, -0.1875]]
    assert batch.loss_mask.tolist() == [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]]
    assert batch.num_agent_tokens == sum(sum(t.mask) for t in (a, b)) == 6
    assert ((batch.advantages != 0) <= (batch.loss_mask > 0)).all()
    # with the std: the same deviations over the pooled population std
    std = (((0.3125**2) * 2 + 0.4375**2 + 0.1875**2) / 4) ** 0.5
    members, _ = make_groups([a, b], "std", "turn", gamma=0.5)
    assert members[0][1] == pytest.approx([0.3125 / std, 0.3125 / std], rel=1e-5)
    assert members[1][1] == pytest.approx([-0.4375 / std, -0.1875 / std], rel=1e-5)


def test_gigpo_step_groups_by_hand():
    # four rollouts of one task, gamma 0.5, no turn rewards; all share the first state (the
    # prompt); R1 and R2 saw the same tool reply, so their second turns share a state too
    r1 = _two_turns("t", 1.0, [0, 1, 0, 1], tool_reply="5")  # returns [0.5, 1]
    r2 = _two_turns("t", 0.0, [0, 1, 0, 1], tool_reply="5")  # returns [0, 0]
    r3 = _two_turns("t", 1.0, [0, 1, 0, 1], tool_reply="error")  # returns [0.5, 1], alone
    r4 = _two_turns("t", 0.0, [0, 1, 0, 1], tool_reply="7")  # returns [0, 0], alone
    s = [turn_anchors(r) for r in (r1, r2, r3, r4)]
    assert s[0][0] == s[1][0] == s[2][0] == s[3][0] and s[0][1] == s[1][1]
    assert len({s[0][1], s[2][1], s[3][1]}) == 3
    members, counts = make_groups([r1, r2, r3, r4], "none", "gigpo", gamma=0.5, step_adv_weight=0.5)
    # episode: scores [1, 0, 1, 0], mean 0.5 -> [0.5, -0.5, 0.5, -0.5]
    # step group of the prompt: returns [0.5, 0, 0.5, 0], mean 0.25 -> [0.25, -0.25, 0.25, -0.25]
    # step group of reply "5": returns [1, 0], mean 0.5 -> [0.5, -0.5]; the others alone -> 0
    # A = episode + 0.5 * step
    assert [x for _, x in members] == [[0.625, 0.75], [-0.625, -0.75], [0.625, 0.5], [-0.625, -0.5]]
    assert counts == {
        "groups": 1,
        "step_groups": 2,
        "step_grouped_turns": 6,
        "step_turns": 8,
        "step_group_size": 3.0,
    }


def test_gigpo_step_groups_never_cross_tasks():
    adv, stats = L.gigpo_advantages(
        [1.0, 0.0, 1.0, 1.0],
        [[1.0], [0.0], [1.0], [1.0]],
        [["s"], ["s"], ["s"], ["s"]],
        [0, 0, 1, 1],
        scale="none",
    )
    assert adv == [[1.0], [-1.0], [0.0], [0.0]] and stats["step_groups"] == 2


def test_groups_without_any_difference_are_dropped_per_mode():
    # equal scores, different process rewards: no signal for the trajectory, some for the turns
    a = _two_turns("t", 1.0, [0, 1, 0, 1], [1.0, 0.0])
    b = _two_turns("t", 1.0, [0, 1, 0, 1], [0.0, 0.0])
    assert make_groups([a, b], "std")[1] == {"dropped_groups": 1, "groups": 0}
    members, counts = make_groups([a, b], "std", "turn")
    assert counts["groups"] == 1 and members[0][1][0] > 0 > members[1][1][0]
    # gigpo: the first turns share the prompt's state and their returns differ (2 vs 1)
    members, counts = make_groups([a, b], "none", "gigpo")
    assert counts["groups"] == 1 and [x for _, x in members] == [[0.5, 0.0], [-0.5, 0.0]]
    same = _two_turns("t", 1.0, [0, 1, 0, 1], [0.0, 0.0])
    assert make_groups([b, same], "std", "gigpo")[1]["dropped_groups"] == 1


def test_trajectory_mode_ignores_turn_rewards_and_keeps_one_advantage_per_sequence():
    a = _two_turns("t", 1.0, [0, 1, 0, 1], [0.3, 0.0])
    b = _two_turns("t", 0.0, [0, 1, 0, 1])
    members, _ = make_groups([a, b], "std")
    assert [x for _, x in members] == pytest.approx([1.0, -1.0], abs=1e-5)
    batch = collate([to_sequence(t, advantage=x) for t, x in members], pad_id=0)
    assert batch.advantages.shape == (2,)


def test_turn_rewards_must_match_the_turns():
    bad = _two_turns("t", 1.0, [0, 1, 0, 1], [0.5])
    with pytest.raises(ValueError, match="1 turn_rewards for 2 sampled turns"):
        make_groups([bad, _two_turns("t", 0.0, [0, 1, 0, 1])], "std", "turn")


def test_mixed_batches_broadcast_a_scalar_advantage_over_the_agent_tokens():
    a = _two_turns("t", 1.0, [0, 0, 1, 0, 1])
    seqs = [to_sequence(a, advantage=[2.0, -1.0]), to_sequence(a, advantage=0.5)]
    batch = collate(seqs, pad_id=0)
    assert batch.advantages.tolist() == [[0.0, 2.0, 0.0, -1.0], [0.0, 0.5, 0.0, 0.5]]
    assert seqs[0].advantage == 0.5  # the mean over its agent tokens, for logging
    # a shared prefix (here one token) is cut from the per-token advantages as from the loss mask
    shared = collate(seqs, pad_id=0, share_prefix=True)
    assert shared.prefix_ids.tolist() == [[10]]
    assert torch.equal(shared.advantages, batch.advantages[:, 1:])
    assert torch.equal(shared.loss_mask, batch.loss_mask[:, 1:])


def test_credit_fields_are_checked():
    base = {"model": "m", "env": "toy/calculator-v0", "sampler": "hf"}
    with pytest.raises(ValueError, match="gamma"):
        GRPOConfig(**base, gamma=0.9)
    with pytest.raises(ValueError, match="step_adv_weight"):
        GRPOConfig(**base, advantage="turn", step_adv_weight=0.5)
    with pytest.raises(ValueError, match="advantage must be one of"):
        GRPOConfig(**base, advantage="step")
    assert GRPOConfig(**base, advantage="gigpo", gamma=0.9, step_adv_weight=0.5).gamma == 0.9


def _coin(text: str) -> float:
    """The parity of a text's CRC-32: a fair coin per sample."""
    return float(zlib.crc32(text.encode()) & 1)


def _final_coin(traj, task) -> float:
    return _coin("".join(m.get("content") or "" for m in traj.messages if m.get("role") == "assistant"))


def _two_turn_calculator(**kwargs):
    """The calculator with exactly two turns (a reply without a tool call is answered with a
    reminder instead of ending the episode), a coin per turn as its process reward and a coin as
    its score."""
    from agentgym.envs.toy import CalculatorEnv

    from agentgym.verifiers import Rubric

    class TwoTurnCalculator(CalculatorEnv):
        verifier = Rubric([_final_coin], weights=[1.0])
        ends_on_text = False

        def turn_reward(self, action, replies):
            return 0.5 * _coin(action.get("content") or "")

    return TwoTurnCalculator(max_turns=2, **kwargs)


@pytest.mark.parametrize("advantage", ["turn", "gigpo"])
def test_grpo_trains_on_turn_level_credit(tiny_model_dir, tmp_path, advantage):
    from agentgym.trainers import GRPOConfig, train_grpo

    from agentgym.registry import register

    register("test/two_turn_calculator-v0", f"{__name__}:_two_turn_calculator")
    cfg = GRPOConfig(
        model=str(tiny_model_dir),
        env="test/two_turn_calculator-v0",
        env_kwargs={"difficulty": 1},
        num_tasks=2,
        tasks_per_step=2,
        group_size=4,
        max_steps=2,
        max_tokens=12,
        batch_size=8,
        micro_batch_size=8,
        learning_rate=3e-3,
        sampler="hf",
        output_dir=str(tmp_path),
        quiet=True,
        advantage=advantage,
        gamma=0.9,
    )
    train_grpo(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(x) for x in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "groups" in r]
    assert len(steps) == 2
    ok = [r for r in rollouts if r["status"] in ("ok", "truncated")]
    # every episode took two turns, each with its process reward on record
    assert ok and all(len(r["metadata"]["turn_rewards"]) == 2 for r in ok)
    assert all(set(r["metadata"]["turn_rewards"]) <= {0.0, 0.5} for r in ok)
    trained = [r for r in steps if r["groups"]]
    assert trained and all(r["agent_tokens"] > 0 and math.isfinite(r["loss"]) for r in trained)
    if advantage == "gigpo":
        # every group's first turns start from the same prompt: at least one step group of
        # group_size turns per kept group
        for r in trained:
            assert r["step_groups"] >= r["groups"] and r["step_grouped_turns"] >= 4 * r["groups"]
            assert r["step_turns"] == 2 * 4 * r["groups"]
    else:
        assert all("step_groups" not in r for r in steps)
