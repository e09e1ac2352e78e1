"""The hf generator lets go of work nobody waits for: a cancelled request leaves its batch at the
next token without harming its neighbours, ``close()`` stops generation in flight, and a run
whose turns timed out exits cleanly (it used to abort with ``terminate called without an active
exception`` while the generation thread was still inside torch)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from agentgym.policy import SamplingParams
from agentgym.testing import need

NEVER = 10**6
"""an end-of-turn id outside the vocabulary: every request runs to its max_tokens"""


@pytest.fixture
def endless(tiny_dir):
    need(module="transformers", install="pip install 'agentgym[train]'")
    from agentgym.policies.hf import HFGenerator
    from agentgym.policies.llm import load_tokenizer

    gen = HFGenerator(str(tiny_dir), load_tokenizer(str(tiny_dir)))
    gen.eos_id = NEVER
    yield gen
    gen.close()


def test_a_cancelled_request_leaves_its_batch_and_spares_its_neighbour(endless):
    sampling = SamplingParams(temperature=0, max_tokens=300)

    async def main():
        a = asyncio.create_task(endless.generate([[1, 80, 90]], sampling))
        b = asyncio.create_task(endless.generate([[1, 70, 71]], sampling))  # the same batch
        await asyncio.sleep(0.2)
        a.cancel()
        [done] = await b
        # a request alone that nobody waits for stops at once, and the next one is answered
        lone = asyncio.create_task(
            endless.generate([[1, 60]], SamplingParams(temperature=0, max_tokens=10**5))
        )
        await asyncio.sleep(0.2)
        lone.cancel()
        t0 = time.monotonic()
        [after] = await endless.generate([[1, 50]], SamplingParams(temperature=0, max_tokens=4))
        return done, after, time.monotonic() - t0

    done, after, waited = asyncio.run(main())
    assert len(done.ids) == 300 and done.finish_reason == "length"
    assert len(after.ids) == 4 and waited < 10  # 10**5 tokens would take minutes


def test_close_stops_generation_in_flight_and_answers_with_an_error(endless):
    async def main():
        task = asyncio.create_task(
            endless.generate([[1, 80]], SamplingParams(temperature=0, max_tokens=10**5))
        )
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await asyncio.to_thread(endless.close)
        took = time.monotonic() - t0
        with pytest.raises(RuntimeError, match="closed"):
            await task
        return took

    assert asyncio.run(main()) < 10
    assert not endless._thread.is_alive()
    endless.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(endless.generate([[1]], SamplingParams(max_tokens=2)))


SCRIPT = """
import sys
from agentgym.envs.toy import CalculatorEnv
from agentgym.policy import resolve_policy
from agentgym.rollout import run_rollouts

if __name__ == "__main__":
    policy = resolve_policy(f"hf:{sys.argv[1]},max_tokens=100000", CalculatorEnv())
    policy.generator.eos_id = 10**6
    trajs = run_rollouts("toy/calculator-v0", policy, n=2, turn_timeout=1.0)
    print(" ".join(t.status for t in trajs), flush=True)
    # exits with the generation thread still busy and the policy not closed
"""


def test_a_run_whose_turns_timed_out_exits_cleanly(tiny_dir, tmp_path):
    need(module="transformers", install="pip install 'agentgym[train]'")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_dir)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["timeout", "timeout"]
    assert "terminate called" not in done.stderr
