"""On-policy distillation on the tiny model with the hf sampler: the loss by hand, a teacher
distilled into itself, the lift from an SFT'd teacher into an untrained student, and the checks."""

import json
import subprocess
import sys

import pytest
import torch
from agentgym.trainers.losses import reverse_kl_loss

HELD_OUT = [f"calc-{100_000_000 + i}" for i in range(8)]
"""calculator tasks outside the distillation pool (calc-0 .. calc-7): the held-out demos' tasks"""


def test_reverse_kl_loss_by_hand():
    # two sequences; the second's last token and every prompt token are masked
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -4.0]], requires_grad=True)
    sampler = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -4.0]])
    teacher = torch.tensor([[-7.0, -1.0, -0.5], [-1.0, -3.0, -9.0]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    loss, stats = reverse_kl_loss(lp, sampler, teacher, mask)
    # log sampler - log teacher on the 4 agent tokens: -1, 0, -2, 2 -> mean -0.25
    assert stats["reverse_kl"] == pytest.approx(-0.25)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-0.25)
    loss.backward()
    # d loss / d lp_t = -(teacher_t - sampler_t) * ratio_t / 4 on agent tokens, 0 elsewhere
    assert lp.grad.flatten().tolist() == pytest.approx([0.0, -0.25, 0.0, -0.5, 0.5, 0.0])


def test_reverse_kl_loss_weights_tokens_by_the_importance_ratio():
    # the trainer's weights moved since sampling: log ratio log 2 on the one agent token
    lp = torch.tensor([[-1.0 + torch.log(torch.tensor(2.0)).item()]], requires_grad=True)
    loss, stats = reverse_kl_loss(lp, torch.tensor([[-1.0]]), torch.tensor([[-4.0]]), torch.tensor([[1]]))
    assert loss.item() == pytest.approx(6.0)  # -(-4 - -1) * 2
    assert stats["ratio_mean"] == pytest.approx(2.0) and stats["reverse_kl"] == pytest.approx(3.0)
    loss.backward()
    assert lp.grad.item() == pytest.approx(6.0)


def _distill(student, teacher, output_dir, **overrides):
    from agentgym.trainers import DistillConfig, train_distill

    cfg = DistillConfig(
        **{
            "model": str(student),
            "teacher": str(teacher),
            "env": "toy/calculator-v0",
            "env_kwargs": {"difficulty": 1},
            "num_tasks": 8,
            "tasks_per_step": 4,
            "group_size": 4,
            "max_steps": 1,
            "max_tokens": 48,
            "batch_size": 16,
            "micro_batch_size": 16,
            "learning_rate": 3e-3,
            "sampler": "hf",
            "output_dir": str(output_dir),
            "quiet": True,
            **overrides,
        }
    )
    summary = train_distill(cfg)
    rows = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "mean_score" in r]


def test_a_teacher_distilled_into_itself_gives_zero_kl_and_gradient(tiny_model_dir, tmp_path):
    s, rows = _distill(tiny_model_dir, f"hf:{tiny_model_dir}", tmp_path / "self")
    [row] = rows
    assert row["sequences"] == 16 and row["agent_tokens"] > 100
    # the sampler's log-probs (batched generation) and the teacher's forward agree up to rounding
    assert abs(row["reverse_kl"]) < 1e-4
    assert row["grad_norm"] < 1e-3
    assert set(row) >= {"mean_score", "pass_rate", "statuses", "ratio_mean"}
    assert len((tmp_path / "self" / "rollouts.jsonl").read_text().splitlines()) == 16
    assert s["steps"] == 1 and (tmp_path / "self" / "final" / "config.json").exists()


def _held_out_logprob(model_dir, demos) -> float:
    """The model's mean log-prob per agent token of scripted demos (teacher forcing)."""
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.common import Tokenizer, load_tokenizer
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = collate([Tokenizer(tok, 2048)(t) for t in demos], tok.pad_token_id)
    with torch.no_grad():
        lp = forward_logprobs(model, batch)
    return float((lp * batch.loss_mask).sum() / batch.loss_mask.sum())


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory):
    """The tiny model after 100 SFT steps on scripted calculator demos (of other tasks than the
    held-out ones), and held-out demos: the teacher imitates them, the untrained model does not."""
    from agentgym.trainers import SFTConfig, train_sft

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    root = tmp_path_factory.mktemp("teacher")
    kwargs = {"env_kwargs": {"difficulty": 1}, "progress": False}
    write_jsonl(root / "demos.jsonl", run_rollouts("toy/calculator-v0", "scripted", n=128, **kwargs))
    held_out = run_rollouts("toy/calculator-v0", "scripted", n=len(HELD_OUT), task_ids=HELD_OUT, **kwargs)
    run = train_sft(
        SFTConfig(
            model=str(tiny_model_dir),
            data=[str(root / "demos.jsonl")],
            output_dir=str(root / "run"),
            max_steps=100,
            batch_size=16,
            micro_batch_size=16,
            learning_rate=3e-3,
            quiet=True,
        )
    )
    return run["model_dir"], held_out


def _check_lift(student, teacher, output_dir, steps, seed):
    teacher_dir, held_out = teacher
    before = _held_out_logprob(student, held_out)
    s, rows = _distill(student, teacher_dir, output_dir, max_steps=steps, seed=seed)
    after = _held_out_logprob(s["model_dir"], held_out)
    kls = s["reverse_kls"]
    print(json.dumps({"seed": seed, "held_out_logprob": [before, after], "reverse_kls": kls}))
    assert len(rows) == steps and all(r["sequences"] == 16 for r in rows)
    return before, after, kls


def test_distilling_an_sft_teacher_lowers_kl_and_lifts_held_out_likelihood(tiny_model_dir, teacher, tmp_path):
    before, after, kls = _check_lift(tiny_model_dir, teacher, tmp_path / "lift", steps=8, seed=0)
    # measured: the teacher gives the held-out demos -0.09 nats a token, the untrained student
    # -6.12; 8 steps took the student to -5.15 and its reverse KL from 5.59 to 4.89 and 4.52 in
    # its last two steps (at learning rate 1e-2 the KL went up instead: 5.6 -> 6.1)
    assert _held_out_logprob(teacher[0], teacher[1]) > -1.0
    assert sum(kls[-2:]) / 2 < kls[0] - 0.5
    assert after > before + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_lift_holds_for_other_students_and_seeds(seed, teacher, tmp_path):
    """Other untrained students (model seeds), each with its own sampling seed. Measured over
    seeds 1-3: held-out log-prob -6.10 -> -5.08, -6.03 -> -4.63, -6.16 -> -5.43 a token; reverse
    KL from 6.12, 6.05, 5.85 to 4.87, 5.30, 4.68 (mean of the last three steps)."""
    from agentgym.policies.tiny import build_tiny_model

    student = build_tiny_model(tmp_path / "student", size="tiny", seed=seed)
    before, after, kls = _check_lift(student, teacher, tmp_path / "lift", steps=10, seed=seed)
    assert sum(kls[-3:]) / 3 < kls[0] - 0.5
    assert after > before + 0.5


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tok = AutoTokenizer.from_pretrained(str(other))
    tok.add_tokens(["<|tool|>"])
    tok.save_pretrained(str(other))
    with pytest.raises(ValueError, match=r"does not share the student's .* tokenizer: 261 vs 260 tokens"):
        _distill(tiny_model_dir, other, tmp_path / "run")
    assert not (tmp_path / "run" / "rollouts.jsonl").exists()  # refused before any rollout


@pytest.mark.parametrize(
    ("teacher", "message"),
    [("", "teacher is required"), ("vllm:/m", "only a model directory"), ("hf:/m,device=cuda", "no options")],
)
def test_teacher_specs_are_checked(teacher, message):
    from agentgym.trainers import DistillConfig

    with pytest.raises(ValueError, match=message):
        DistillConfig(model="/m", env="toy/calculator-v0", teacher=teacher)


def test_train_distill_help_lists_the_teacher_flag():
    out = subprocess.run(
        [sys.executable, "-m", "agentgym", "train", "distill", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--teacher" in out.stdout and "hf:DIR" in out.stdout
    assert "--kl-coef" not in out.stdout
