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
    shared_prefixes,
    to_sequence,
)

from agentgym.types import Trajectory


def _traj():
    # prompt (0), agent turn (1), tool result (0), agent turn (1)
    ids = [1, 40, 41, 42, 1, 50, 51, 2, 1, 60, 61, 62, 63, 2, 1, 70, 71, 2]
    mask = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    lps = [-0.3 if m else 0.0 for m in mask]
    return Trajectory(messages=[], env="toy/calculator-v0", task_id="t", tokens=ids, mask=mask, logprobs=lps)


@pytest.mark.parametrize("full_logits", [False, True])
def test_env_and_tool_tokens_get_exactly_zero_gradient(tiny_model_dir, full_logits):
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

    def keep(_module, args):  # the final hidden states, as the model's forward gives them to the head
        if "hidden" not in captured:
            args[0].retain_grad()
            captured["hidden"] = args[0]

    handle = model.get_output_embeddings().register_forward_pre_hook(keep)
    lp = forward_logprobs(model, batch, full_logits=full_logits)
    handle.remove()
    hidden = captured["hidden"]
    assert hidden.shape[:2] == batch.input_ids.shape
    for agg in ("token-mean", "seq-mean-token-mean"):
        hidden.grad = None
        loss, _ = losses.ppo_clip_loss(
            lp, lp.detach(), batch.advantages, batch.loss_mask, agg=agg
        )  # ratio 1: nothing clipped
        loss.backward(retain_graph=True)
        g = hidden.grad[:, :-1].abs().sum(-1)  # position t predicts target t
        assert (g[batch.loss_mask == 0] == 0).all()
        assert (g[batch.loss_mask == 1] > 0).all()
    logits = model(input_ids=batch.input_ids).logits
    logits.retain_grad()
    losses.masked_nll(logits[:, :-1], batch.targets, batch.loss_mask).backward()
    g = logits.grad[:, :-1].abs().sum(-1)
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


def _rollout_like(prompt: list[int], n: int, rng) -> Sequence:
    """prompt, n sampled tokens, an env reply, 3 more sampled tokens"""
    sampled = [int(x) for x in rng.integers(3, 250, n)]
    env = [int(x) for x in rng.integers(3, 250, 5)]
    ids = prompt + sampled + env + sampled[:3]
    mask = [0] * len(prompt) + [1] * n + [0] * 5 + [1] * 3
    return Sequence(ids=ids, mask=mask, logprobs=[-1.0] * len(ids), advantage=float(rng.normal()))


def _grouped_sequences():
    import numpy as np

    rng = np.random.default_rng(0)
    a = [int(x) for x in rng.integers(3, 250, 40)]
    b = a[:20] + [int(x) for x in rng.integers(3, 250, 7)]  # shares a system prompt with a, not the task
    return (
        [_rollout_like(a, n, rng) for n in (5, 9, 12)]
        + [_rollout_like(b, n, rng) for n in (3, 14)]
        + [_rollout_like(a[:5], 4, rng)]
    )


def test_shared_prefixes_stop_before_the_first_agent_token():
    seqs = _grouped_sequences()
    prefixes, index = shared_prefixes(seqs)
    assert [len(p) for p in prefixes] == [39, 26, 4] and index == [0, 0, 0, 1, 1, 2]
    for i, s in enumerate(seqs):
        cut = len(prefixes[index[i]])
        assert s.ids[:cut] == prefixes[index[i]] and 1 not in s.mask[: cut + 1]
    shared = collate(seqs, pad_id=0, share_prefix=True)
    plain = collate(seqs, pad_id=0)
    assert shared.prefix_ids.shape == (3, 39) and shared.input_ids.shape[1] < plain.input_ids.shape[1]
    # every agent token is still a target of the continuations, with its sampler log-prob
    assert shared.loss_mask.sum(-1).tolist() == plain.loss_mask.sum(-1).tolist()
    assert shared.old_logprobs.sum(-1).tolist() == plain.old_logprobs.sum(-1).tolist()
    # no prompt repeats: nothing to share, the plain batch
    assert collate(seqs[2:4], pad_id=0, share_prefix=True).prefix_ids is None
    # an agent token second in line would be predicted from inside a prefix: no sharing
    early = [Sequence(ids=[5, 6, 7], mask=[0, 1, 1]), Sequence(ids=[5, 6, 8], mask=[0, 1, 1])]
    assert collate(early, pad_id=0, share_prefix=True).prefix_ids is None


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_forward_gives_the_same_logprobs_and_gradient(tiny_model_dir, lora):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(model, cfg)
    seqs = _grouped_sequences()

    def run(share):
        model.zero_grad()
        batch = collate(seqs, pad_id=0, share_prefix=share)
        sums = (forward_logprobs(model, batch) * batch.loss_mask).sum(-1)
        (sums * batch.advantages).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return sums.detach(), grads

    plain_sums, plain_grads = run(False)
    shared_sums, shared_grads = run(True)
    assert torch.allclose(shared_sums, plain_sums, atol=1e-4)
    assert torch.allclose(shared_grads, plain_grads, atol=1e-4 * plain_grads.abs().max().item())
    assert plain_grads.abs().max() > 0


def _llama(vocab: int, tied: bool, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, tie_word_embeddings=tied, **shape | kw))


def _logprobs_and_grads(model, batch, full_logits):
    model.zero_grad()
    lp = forward_logprobs(model, batch, full_logits=full_logits)
    sums = (lp * batch.loss_mask).sum(-1)
    (sums * batch.advantages).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lp.detach() * batch.loss_mask, grads


@pytest.mark.parametrize("model_kind", ["tiny", "tiny-lora", "llama-49k-tied", "llama-49k-lora-head"])
@pytest.mark.parametrize("share", [False, True])
def test_the_chunked_head_gives_the_logprobs_and_gradient_of_the_full_logits(
    tiny_model_dir, monkeypatch, model_kind, share
):
    """The LM head over the trained positions only, a few rows at a time, against the logits of
    every position: the same log-probs and the same gradient, with and without shared prefixes."""
    from agentgym.trainers import batch as batch_module
    from transformers import AutoModelForCausalLM

    if model_kind.startswith("tiny"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    else:
        model = _llama(49152, tied=model_kind.endswith("tied"))
    if "lora" in model_kind:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj"] + (["lm_head"] if model_kind.endswith("head") else [])
        model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    vocab = model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(batch_module, "LOGITS_PER_CHUNK", 7 * vocab)  # chunks of 7 rows
    batch = collate(_grouped_sequences(), pad_id=0, share_prefix=share)
    assert batch.num_agent_tokens > 7 * 3  # several chunks
    full_lp, full_grads = _logprobs_and_grads(model, batch, True)
    lp, grads = _logprobs_and_grads(model, batch, False)
    assert torch.allclose(lp, full_lp, atol=1e-5)
    assert torch.allclose(grads, full_grads, atol=1e-5 * full_grads.abs().max().item())
    assert full_grads.abs().max() > 0


def test_the_chunked_head_keeps_no_logits_for_backward():
    """With a 49,152-id vocabulary the full path saves [B, T, V] logits for the backward pass;
    the chunked path saves nothing that size (each chunk's logits are computed again)."""
    model = _llama(49152, tied=True)
    batch = collate(_grouped_sequences(), pad_id=0)
    b, t = batch.targets.shape
    weights = {p.data_ptr() for p in model.parameters()}

    def largest_saved(full_logits):
        sizes = [0]

        def pack(x):
            if x.data_ptr() not in weights:
                sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            forward_logprobs(model, batch, full_logits=full_logits)
        return max(sizes)

    assert largest_saved(True) >= b * t * 49152
    assert largest_saved(False) <= batch.input_ids.numel() * 128  # activations (MLP width 128), no logits


def test_a_model_that_changes_its_logits_takes_the_full_path():
    """Gemma 2 soft-caps the head's output inside its forward: the chunked head would give other
    log-probs, so such a model gets the full logits (and the same values as with full_logits)."""
    from agentgym.trainers.batch import _PLAIN_HEAD
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    config = Gemma2Config(
        vocab_size=320, head_dim=16, num_key_value_heads=4, final_logit_softcapping=0.5, **shape
    )
    model = Gemma2ForCausalLM(config)
    batch = collate(_grouped_sequences(), pad_id=0)
    with torch.no_grad():
        full = forward_logprobs(model, batch, full_logits=True) * batch.loss_mask
        assert torch.allclose(forward_logprobs(model, batch) * batch.loss_mask, full, atol=1e-6)
        assert torch.allclose(forward_logprobs(model, batch) * batch.loss_mask, full, atol=1e-6)
    assert _PLAIN_HEAD[model.lm_head] is False


def test_the_chunked_head_runs_under_the_models_autocast():
    """Mixed precision wraps only the model's forward in autocast (as accelerate does): the head's
    chunks run in the same precision as the model's own head, so both paths agree."""
    from agentgym.trainers.batch import _PLAIN_HEAD

    model = _llama(320, tied=False)
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    batch = collate(_grouped_sequences(), pad_id=0)
    full_lp, full_grads = _logprobs_and_grads(model, batch, True)
    lp, grads = _logprobs_and_grads(model, batch, False)
    assert _PLAIN_HEAD[model.lm_head]  # the chunked path was taken
    assert torch.allclose(lp, full_lp, atol=2e-2)
    assert torch.allclose(grads, full_grads, atol=2e-2 * full_grads.abs().max().item())


def test_share_prefix_on_is_refused_where_sharded():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType
    from agentgym.trainers.common import shares_prefix
    from agentgym.trainers.config import SFTConfig

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)  # only the field shares_prefix reads
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)
    assert shares_prefix(SFTConfig(model="m", data=["d"]), ddp)
    assert not shares_prefix(SFTConfig(model="m", data=["d"]), fsdp)
    assert not shares_prefix(SFTConfig(model="m", data=["d"], share_prefix="off"), ddp)
    with pytest.raises(ValueError, match=r"share_prefix \(on\).*FSDP"):
        shares_prefix(SFTConfig(model="m", data=["d"], share_prefix="on"), fsdp)


def test_an_unchecked_token_record_is_checked_before_training(tiny_model_dir):
    """A token record loaded from elsewhere (no ``token_check`` in its metadata) is trained on
    only when its mask-1 spans decode to the assistant's messages."""
    import asyncio

    from agentgym.trainers.batch import TokenizeError
    from agentgym.trainers.common import Tokenizer
    from transformers import AutoTokenizer

    from agentgym.rollout import rollout

    (traj,) = asyncio.run(rollout("toy/calculator-v0", "scripted", n=1, seed=3, progress=False))
    tok = Tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir), max_length=4096)
    ids, mask = tok.renderer(traj).tokenize_messages(traj.messages)
    good = Trajectory(messages=traj.messages, env=traj.env, task_id="t", tokens=ids, mask=mask)
    assert sum(tok(good).mask) == sum(mask) and good.metadata["token_check"] == "ok"

    first_agent = mask.index(1)
    forged = list(ids)
    forged[first_agent] = (forged[first_agent] + 1) % 256 + 3
    bad = Trajectory(messages=traj.messages, env=traj.env, task_id="t", tokens=forged, mask=mask)
    with pytest.raises(TokenizeError, match="failed its token check"):
        tok(bad)
