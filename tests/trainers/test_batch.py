"""Turn masking: env and tool tokens are attended to but get exactly zero gradient."""

import pytest
import torch
from agentgym.trainers import losses
from agentgym.trainers.batch import (
    Sequence,
    TokenizeError,
    collate,
    forward_logprobs,
    micro_batches,
    to_sequence,
)

from agentgym.types import Trajectory


def _traj():
    # prompt (0), agent turn (1), tool result (0), agent turn (1)
    ids = [1, 40, 41, 42, 1, 50, 51, 2, 1, 60, 61, 62, 63, 2, 1, 70, 71, 2]
    mask = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    lps = [-0.3 if m else 0.0 for m in mask]
    return Trajectory(messages=[], env="toy/calculator-v0", task_id="t", tokens=ids, mask=mask, logprobs=lps)


def test_env_and_tool_tokens_get_exactly_zero_gradient(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    seqs = [
        to_sequence(_traj(), advantage=1.0),
        Sequence(ids=[1, 44, 45, 46, 2], mask=[0, 0, 1, 1, 1], advantage=-1.0),
    ]
    batch = collate(seqs, pad_id=3)
    # the attention mask covers env/tool tokens; the loss mask does not
    assert batch.attention_mask[0].tolist() == [1] * 18
    assert batch.loss_mask[0].tolist() != batch.attention_mask[0, 1:].float().tolist()
    assert batch.loss_mask[1].tolist() == [0, 1, 1, 1] + [0] * 13

    captured = {}

    def keep(_module, _inp, out):
        out.logits.retain_grad()
        captured["logits"] = out.logits

    handle = model.register_forward_hook(keep)
    lp = forward_logprobs(model, batch)
    handle.remove()
    for agg in ("token-mean", "seq-mean-token-mean"):
        model.zero_grad()
        captured["logits"].grad = None
        loss, _ = losses.ppo_clip_loss(
            lp, lp.detach(), batch.advantages, batch.loss_mask, agg=agg
        )  # ratio 1: nothing clipped
        loss.backward(retain_graph=True)
        g = captured["logits"].grad[:, :-1].abs().sum(-1)  # position t predicts target t
        assert (g[batch.loss_mask == 0] == 0).all()
        assert (g[batch.loss_mask == 1] > 0).all()
    captured["logits"].grad = None
    losses.masked_nll(captured["logits"][:, :-1], batch.targets, batch.loss_mask).backward()
    g = captured["logits"].grad[:, :-1].abs().sum(-1)
    assert (g[batch.loss_mask == 0] == 0).all() and (g[batch.loss_mask == 1] > 0).all()


def test_env_tokens_are_attended_to(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    a = _traj()
    b = _traj()
    b.tokens = list(a.tokens)
    b.tokens[10] = 99  # change a tool-result token
    with torch.no_grad():
        la = forward_logprobs(model, collate([to_sequence(a)], 3))
        lb = forward_logprobs(model, collate([to_sequence(b)], 3))
    # the last agent turn's log-probs depend on the tool result it was conditioned on
    assert not torch.allclose(la[0, 14:], lb[0, 14:])
    assert torch.equal(la[0, :9], lb[0, :9])


def test_padding_does_not_change_logprobs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    short = Sequence(ids=[1, 44, 45, 46, 2], mask=[0, 0, 1, 1, 1])
    with torch.no_grad():
        alone = forward_logprobs(model, collate([short], 3))
        padded = forward_logprobs(model, collate([short, to_sequence(_traj())], 3))
    # the short sequence is first in the batch: its 4 real target positions match
    assert torch.allclose(alone[0], padded[0, :4], atol=1e-5)


def test_micro_batches_bound_padded_size_and_keep_everything():
    seqs = [Sequence(ids=[1] * n, mask=[1] * n) for n in (3, 50, 4, 48, 5, 20)]
    groups = list(micro_batches(seqs, max_tokens=100))
    assert sorted(len(s) for g in groups for s in g) == [3, 4, 5, 20, 48, 50]
    for g in groups:
        assert len(g) == 1 or len(g) * max(len(s) for s in g) <= 100


def test_message_only_trajectory_needs_a_tokenizer():
    t = Trajectory(messages=[{"role": "user", "content": "hi"}], env="toy/calculator-v0", task_id="x")
    with pytest.raises(TokenizeError, match="no token record"):
        to_sequence(t)
    with pytest.raises(TokenizeError, match="no agent tokens"):
        to_sequence(t, tokenize=lambda _: ([1, 2], [0, 0]))
