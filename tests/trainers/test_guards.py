"""Guards that keep bad data and a wrong-signed penalty out of training: the KL term pulls the
policy toward its reference, and records whose token record failed its check never reach a GRPO
group or a DPO pair."""

import json

import pytest
import torch
from agentgym.trainers import losses as L
from agentgym.trainers.dpo import build_pairs
from agentgym.trainers.grpo import make_groups

from agentgym.types import Trajectory


def test_the_kl_term_pulls_the_policy_toward_the_reference():
    """With zero advantages only the k3 penalty acts: descending the loss must shrink the distance
    to the reference from either side (a flipped sign would push it away)."""
    ref = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    start = ref + torch.tensor([[0.8, -0.6, 0.4, -1.2]])
    lp = start.clone().requires_grad_(True)
    mask = torch.ones_like(ref)
    opt = torch.optim.SGD([lp], lr=0.5)
    kls = []
    for _ in range(20):
        opt.zero_grad()
        loss, stats = L.ppo_clip_loss(lp, lp.detach(), torch.zeros(1), mask, ref_logprobs=ref, kl_coef=1.0)
        loss.backward()
        opt.step()
        kls.append(stats["kl_ref"])
    assert kls[0] > 0.1
    assert kls[-1] < kls[0] / 10
    assert ((lp.detach() - ref).abs() < (start - ref).abs()).all()
    assert all(b <= a for a, b in zip(kls, kls[1:], strict=False))


def _record(task_id, score, check="ok", status="ok"):
    t = Trajectory(
        env="e",
        task_id=task_id,
        score=score,
        status=status,
        tokens=[1, 2, 3],
        mask=[0, 1, 1],
        messages=[{"role": "assistant", "content": "x"}],
    )
    t.metadata["token_check"] = check
    return t


def test_grpo_groups_leave_out_records_that_failed_their_token_check():
    bad = ["assistant turn 0: tokens decode to 'y', message says 'x'"]
    trajs = [_record("a", 1.0), _record("a", 0.0), _record("a", 0.5, bad), _record("b", 1.0, bad)]
    trajs.append(_record("b", 0.0))
    members, counts = make_groups(trajs, "std")
    assert counts["excluded_tokens"] == 2
    assert sorted((t.task_id, t.score) for t, _ in members) == [("a", 0.0), ("a", 1.0)]
    assert all(t.metadata["token_check"] == "ok" for t, _ in members)


def test_dpo_pairs_leave_out_records_that_failed_their_token_check():
    bad = ["1 sampled spans but 2 assistant messages"]
    trajs = [_record("a", 1.0, bad), _record("a", 0.5), _record("a", 0.0)]
    trajs += [_record("b", 1.0), _record("b", 0.0, bad)]
    pairs = build_pairs(trajs)
    # a: the failed 1.0 cannot be chosen, so 0.5 over 0.0; b: no valid rejected side is left
    assert [(p.chosen.task_id, p.chosen.score, p.rejected.score) for p in pairs] == [("a", 0.5, 0.0)]
    assert len(build_pairs(trajs, pairs_per_task="all")) == 1


@pytest.mark.slow
def _coin(traj, task) -> float:
    """The parity of the replies' CRC-32: a fair coin per sample, whatever the model knows."""
    import zlib

    text = "".join(m.get("content") or "" for m in traj.messages if m.get("role") == "assistant")
    return float(zlib.crc32(text.encode()) & 1)


def _coin_calculator(**kwargs):
    """toy/calculator-v0 scored by ``_coin``: every group of random samples holds both scores, so
    each GRPO step trains however much the model learned (this test is about the KL term)."""
    from agentgym.envs.toy import CalculatorEnv

    from agentgym.verifiers import Rubric

    class CoinCalculator(CalculatorEnv):
        verifier = Rubric([_coin], weights=[1.0])

    return CoinCalculator(**kwargs)


def test_grpo_with_a_kl_penalty_runs_against_a_frozen_reference(tmp_path):
    """GRPO with kl_coef > 0 loads a reference model, logs the KL to it each step (0 before the
    first update, positive once the policy moved) and keeps the reference frozen."""
    from agentgym.policies.tiny import build_tiny_model
    from agentgym.trainers import GRPOConfig, train_grpo

    from agentgym.registry import register

    register("test/coin_calculator-v0", f"{__name__}:_coin_calculator")
    model = build_tiny_model(tmp_path / "model", seed=0)
    before = {k: v.clone() for k, v in _weights(model).items()}
    cfg = GRPOConfig(
        model=str(model),
        env="test/coin_calculator-v0",
        env_kwargs={"difficulty": 1},
        num_tasks=8,
        tasks_per_step=8,
        group_size=4,
        max_steps=3,
        max_tokens=24,
        batch_size=32,
        micro_batch_size=16,
        learning_rate=3e-3,
        sampler="hf",
        temperature=1.0,
        kl_coef=0.5,
        output_dir=str(tmp_path / "grpo"),
        quiet=True,
    )
    train_grpo(cfg)
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "kl_ref" in r]
    assert len(trained) == 3, f"a step did not train: {rows}"
    # the first update is computed with the policy still equal to the reference
    assert trained[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert all(r["kl_ref"] > 0 for r in trained[1:])
    # the reference is the starting model, untouched on disk
    assert all(torch.equal(before[k], v) for k, v in _weights(model).items())


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_pushed_weights_name_tied_tensors_once_as_the_checkpoint_does(tmp_path):
    """A model whose LM head is its embedding matrix (SmolLM2, most small models) stores it once;
    the weights pushed to a sampler engine must use the checkpoint's names only, or the engine
    refuses them (found on SmolLM2's first GRPO push), with and without LoRA."""
    import json

    import torch
    from agentgym.trainers.common import trainable_state
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert "lm_head.weight" not in stored and "lm_head.weight" in model.state_dict()
    state = trainable_state(model)
    assert set(state) == stored
    assert torch.equal(state["model.embed_tokens.weight"], model.lm_head.weight)

    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert set(trainable_state(peft)) == stored
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"]
