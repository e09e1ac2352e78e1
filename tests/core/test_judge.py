"""The LLM judge: its reply format, what it is shown, and that a reply it cannot read is a
verifier error (env_error), never a 0."""

import re

import pytest

from agentgym.judge import RUBRIC, Judge, parse_score, render
from agentgym.rollout import run_rollouts
from agentgym.types import Task, Trajectory, tool_call
from agentgym.verifiers import Rubric, make_verifier


class FixedReply:
    """A judge policy that replies the same text every time and keeps what it was shown."""

    def __init__(self, text: str):
        self.text = text
        self.seen: list[list[dict]] = []

    async def act(self, traj, env):
        self.seen.append(list(traj.messages))
        return {"role": "assistant", "content": self.text}


class Broken:
    async def act(self, traj, env):
        raise ConnectionError("judge server down")


@pytest.mark.parametrize(
    "reply, score",
    [
        ("Correct answer.\nSCORE: 0.8", 0.8),
        ("score:1", 1.0),
        ("SCORE: 8/10", 0.8),
        ("SCORE: 3 / 4", 0.75),
        ("SCORE: 0.1 ... on reflection SCORE: 0.9", 0.9),  # the last one counts
        ("SCORE: 0", 0.0),
    ],
)
def test_parse_score_reads_both_formats(reply, score):
    assert parse_score(reply) == pytest.approx(score)


@pytest.mark.parametrize(
    "reply, why",
    [
        ("The agent did well, 9 out of 10.", "no 'SCORE: x' line"),
        ("", "no 'SCORE: x' line"),
        ("SCORE: 8", "outside \\[0, 1\\]"),
        ("SCORE: -0.5", "outside \\[0, 1\\]"),
        ("SCORE: 3/0", "divides by zero"),
    ],
)
def test_parse_score_refuses_what_it_cannot_read(reply, why):
    with pytest.raises(ValueError, match=why):
        parse_score(reply)


def _solved() -> Trajectory:
    return Trajectory(
        messages=[
            {"role": "system", "content": "Solve it."},
            {"role": "user", "content": "What is 7 + 5?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [tool_call("calculator", {"expression": "7 + 5"})],
            },
            {"role": "tool", "name": "calculator", "content": "12", "tool_call_id": "call_0"},
            {"role": "assistant", "content": "12"},
        ],
        task_id="calc-1",
    )


def test_the_judge_sees_the_rubric_task_calls_results_and_answer():
    policy = FixedReply("Used the calculator and answered 12.\nSCORE: 0.9")
    judge = Judge(policy)
    try:
        assert judge(_solved(), Task("calc-1", prompt="What is 7 + 5?", answer="12")) == pytest.approx(0.9)
    finally:
        judge.close()
    [(system, user)] = policy.seen
    assert system == {"role": "system", "content": RUBRIC} and "SCORE: x" in RUBRIC
    text = user["content"]
    assert "What is 7 + 5?" in text and "calculator" in text and '"7 + 5"' in text
    assert "[tool calculator] 12" in text and text.endswith("FINAL ANSWER:\n12")
    assert "Solve it." not in text  # the agent's system prompt is not the judge's business
    no_answer = render(Trajectory(messages=[{"role": "user", "content": "q"}]))
    assert "no final answer" in no_answer


def test_judge_in_an_env_rubric_and_as_the_run_verifier():
    judge = Judge(FixedReply("SCORE: 1/4"))
    rubric = Rubric([judge], weights=[2.0])
    assert rubric(_solved(), Task("calc-1")).total == pytest.approx(0.5)
    trajs = run_rollouts(
        "toy/calculator-v0", "scripted", n=3, env_kwargs={"difficulty": 1}, progress=False, verifier=judge
    )
    judge.close()
    assert [t.status for t in trajs] == ["ok"] * 3
    assert [t.score for t in trajs] == [0.25] * 3
    assert trajs[0].metadata["breakdown"]["judge"] == 0.25
    assert trajs[0].metadata["breakdown"]["env_score"] == 1.0  # the env's own verdict is kept


@pytest.mark.parametrize(
    "policy, why",
    [
        (FixedReply("Looks fine to me!"), "has no 'SCORE: x' line"),
        (FixedReply("SCORE: 7"), "outside \\[0, 1\\]"),
        (Broken(), "ConnectionError: judge server down"),
    ],
)
def test_a_bad_or_failed_judge_reply_is_a_verifier_error_not_a_zero(policy, why):
    judge = Judge(policy)
    trajs = run_rollouts(
        "toy/calculator-v0", "scripted", n=2, env_kwargs={"difficulty": 1}, progress=False, verifier=judge
    )
    judge.close()
    for t in trajs:
        assert t.status == "env_error" and t.score == 0.0
        assert "judge" not in t.metadata["breakdown"]
        assert pytest.approx(1.0) == t.metadata["breakdown"]["env_score"]
        assert re.search(why, t.metadata["verifier_errors"]["judge"])
    score = Rubric([Judge(FixedReply("no idea"))])(_solved(), Task("calc-1"))
    assert score.errors and "no 'SCORE: x' line" in score.errors["judge"]


def test_a_judge_that_never_answers_times_out():
    import asyncio

    class Silent:
        async def act(self, traj, env):
            await asyncio.sleep(30)

    judge = Judge(Silent(), timeout=0.2)
    with pytest.raises(TimeoutError, match="no reply within 0.2 s"):
        judge(_solved())
    judge.close()


def test_make_verifier_specs():
    judge = make_verifier("judge:openai:http://127.0.0.1:9/v1,model=j,temperature=0")
    assert (
        isinstance(judge, Judge) and judge.policy_spec == "openai:http://127.0.0.1:9/v1,model=j,temperature=0"
    )
    for bad in ("rm", "rm:", "judge:", "bleu:x", "/tmp/model"):
        with pytest.raises(ValueError, match="give rm:DIR .* or judge:POLICY_SPEC"):
            make_verifier(bad)
    scripted = make_verifier("judge:scripted")
    with pytest.raises(ValueError, match="unknown policy 'scripted'"):
        scripted(_solved())
    scripted.close()


def test_cli_eval_takes_verifier(capsys, tmp_path):
    from agentgym.cli import main

    out = tmp_path / "r.jsonl"
    code = main(
        [
            "eval",
            "--env",
            "toy/calculator-v0",
            "--policy",
            "scripted",
            "--n",
            "2",
            "--json",
            "--out",
            str(out),
        ]
        + ["--env-kwargs", "difficulty=1", "--verifier", "bleu:x"]
    )
    assert code == 2 and "give rm:DIR" in capsys.readouterr().err
