"""Property tests: whatever a model writes as a move, ``step`` answers with an observation."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgym
from agentgym.types import tool_call

ENVS = {
    g: agentgym.make(f"games/{g}-v0") for g in ("tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker")
}
ENVS["chess"] = agentgym.make("games/openspiel-v0", game="chess")

moves = st.one_of(
    st.text(max_size=80),
    st.integers(-(10**12), 10**12),
    st.sampled_from(["x3", "3", "(1,1)", "Bet", "Call", "e4", "Nf3", "x(9,9)", "", " ", "0" * 300]),
    st.floats(allow_nan=True),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(game=st.sampled_from(sorted(ENVS)), move=moves, as_text=st.booleans(), seed=st.integers(0, 50))
def test_any_move_is_an_observation_never_an_exception(game, move, as_text, seed):
    env = ENVS[game]
    env.reset(options={"task_id": f"{game}-{seed}"})
    if as_text:
        msg = {
            "role": "assistant",
            "content": f'<tool_call>{{"name": "move", "arguments": {{"move": {move!r}}}}}</tool_call>',
        }
    else:
        msg = {"role": "assistant", "content": "", "tool_calls": [tool_call("move", {"move": move})]}
    replies, reward, terminated, truncated, info = env.step(msg)
    assert replies and all(isinstance(m.get("content"), str) for m in replies)
    assert 0.0 <= reward <= 1.0


@settings(max_examples=200, deadline=None)
@given(content=st.text(max_size=200))
def test_any_reply_text_is_answered(content):
    env = ENVS["connect_four"]
    env.reset(options={"task_id": "connect_four-1"})
    replies, *_ = env.step({"role": "assistant", "content": content})
    assert replies
