"""Hand-computed checks of the trainer maths in agentgym.trainers.losses."""

import math

import pytest
import torch
from agentgym.trainers import losses as L


def test_group_advantage_population_std():
    adv = L.group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), [7, 7, 7, 7], eps=0.0)
    # mean 0.5, population std 0.5 -> reward 1 has advantage exactly 1
    assert adv.tolist() == [1.0, -1.0, 1.0, -1.0]


def test_group_advantages_groups_are_independent_and_constant_groups_are_zero():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 4.0])
    adv = L.group_advantages(r, [0, 0, 0, 1, 1, 1], eps=0.0)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    std = math.sqrt(((0 - 2) ** 2 + 0 + (4 - 2) ** 2) / 3)
    assert adv[3:].tolist() == pytest.approx([-2 / std, 0.0, 2 / std])
    dr = L.group_advantages(r, [0, 0, 0, 1, 1, 1], scale="none")
    assert dr.tolist() == [0.0, 0.0, 0.0, -2.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="scale"):
        L.group_advantages(r, [0] * 6, scale="max")
    with pytest.raises(ValueError, match="shape"):
        L.group_advantages(r, [0] * 5)


def test_dpo_margin_and_bradley_terry():
    z = torch.zeros(1)
    loss, cr, rr = L.dpo_loss(torch.tensor([2.0]), torch.tensor([-3.0]), z, z, beta=0.1)
    assert (cr - rr).item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    assert L.bradley_terry(torch.tensor(1.0)).item() == pytest.approx(0.731, abs=5e-4)
    # reference log-probs shift the implicit rewards: ratio 2-1=1 and -3-(-1)=-2 -> margin 0.3
    _, cr, rr = L.dpo_loss(
        torch.tensor([2.0]), torch.tensor([-3.0]), torch.tensor([1.0]), torch.tensor([-1.0]), beta=0.1
    )
    assert (cr - rr).item() == pytest.approx(0.3)


def test_dpo_label_smoothing_and_ipo():
    c, r, z = torch.tensor([1.0]), torch.tensor([0.0]), torch.zeros(1)
    loss, _, _ = L.dpo_loss(c, r, z, z, beta=1.0, label_smoothing=0.1)
    expected = -0.9 * math.log(1 / (1 + math.exp(-1))) - 0.1 * math.log(1 / (1 + math.exp(1)))
    assert loss.item() == pytest.approx(expected)
    loss, _, _ = L.dpo_loss(c, r, z, z, beta=0.25, loss_type="ipo")
    assert loss.item() == pytest.approx((1 - 2.0) ** 2)
    with pytest.raises(ValueError, match="ipo"):
        L.dpo_loss(c, r, z, z, loss_type="ipo", label_smoothing=0.1)


def test_ppo_clip_low_and_high_are_separate():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.5, 0.5 with advantages +1, +1, -1, -1
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, stats = L.ppo_clip_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # token 0: min(1.5, 1.28) -> -1.28 (clipped); token 1: min(0.5, 0.8)=0.5 -> -0.5;
    # token 2: -max... loss=max(1.5, 1.28)=1.5; token 3: max(0.5, 0.8)=0.8 (clipped)
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.5 + 0.8) / 4)
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    # clipped tokens carry no gradient; unclipped ones carry -A * ratio / 4
    assert lp.grad[0].tolist() == pytest.approx([0.0, -0.5 / 4, 1.5 / 4, 0.0])


def test_decoupled_ppo_with_truncated_importance_weights_by_hand():
    """One sequence of 3 agent tokens, advantage +1, clip range [0.8, 1.28], cap 2.

    proximal (old)   -1.0        -2.0              -0.5
    behaviour        -1.0        -2.0 - ln 3       -0.5 + ln 2
    current          -1.0        -2.0 + ln 1.5     -0.5 + ln 0.9
    ratio pi/old      1.0         1.5               0.9
    pi_old/pi_beh     1           3                 0.5
    weight w          1           2 (truncated)     0.5
    surrogate   -min(r, clip r)   -1.0        -1.28 (clipped)   -0.9
    w * surrogate     -1.0        -2.56             -0.45
    token-mean: (-1.0 - 2.56 - 0.45) / 3 = -4.01 / 3 = -1.33667
    d loss / d current log-prob = -A * w * r / 3: -1/3, 0 (clipped), -0.45/3 = -0.15
    """
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    behaviour = torch.tensor([[-1.0, -2.0 - math.log(3.0), -0.5 + math.log(2.0)]])
    lp = torch.tensor([[-1.0, -2.0 + math.log(1.5), -0.5 + math.log(0.9)]], requires_grad=True)
    adv, mask = torch.tensor([1.0]), torch.ones(1, 3)
    loss, stats = L.ppo_clip_loss(
        lp, old, adv, mask, clip_low=0.2, clip_high=0.28, behaviour_logprobs=behaviour, tis_cap=2.0
    )
    assert loss.item() == pytest.approx(-4.01 / 3, abs=1e-6)
    assert stats["tis_weight_mean"] == pytest.approx((1 + 2 + 0.5) / 3)
    assert stats["tis_truncated_frac"] == pytest.approx(1 / 3)
    assert stats["ratio_mean"] == pytest.approx((1.0 + 1.5 + 0.9) / 3)
    assert stats["clip_frac"] == pytest.approx(1 / 3)
    loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-1 / 3, 0.0, -0.15], abs=1e-6)
    # a masked token's weight counts nowhere: masking the truncated token leaves (-1 - 0.45) / 2
    loss, stats = L.ppo_clip_loss(
        lp, old, adv, torch.tensor([[1.0, 0.0, 1.0]]), behaviour_logprobs=behaviour, tis_cap=2.0
    )
    assert loss.item() == pytest.approx(-1.45 / 2, abs=1e-6)
    assert stats["tis_truncated_frac"] == 0.0 and stats["tis_weight_mean"] == pytest.approx(0.75)


def test_without_behaviour_log_probs_the_loss_is_the_plain_ppo_loss():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    lp = torch.tensor([[-1.0, -2.0 + math.log(1.5), -0.5 + math.log(0.9)]])
    loss, stats = L.ppo_clip_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 3), clip_high=0.28)
    assert loss.item() == pytest.approx(-(1.0 + 1.28 + 0.9) / 3, abs=1e-6)
    assert "tis_weight_mean" not in stats
    # proximal == behaviour: every weight is 1 and the decoupled loss is the plain one
    same, _ = L.ppo_clip_loss(
        lp, old, torch.tensor([1.0]), torch.ones(1, 3), clip_high=0.28, behaviour_logprobs=old, tis_cap=2.0
    )
    assert same.item() == pytest.approx(loss.item(), abs=1e-7)
    with pytest.raises(ValueError, match="needs both behaviour_logprobs and tis_cap > 0"):
        L.ppo_clip_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 3), tis_cap=2.0)
    with pytest.raises(ValueError, match="needs both behaviour_logprobs and tis_cap > 0"):
        L.ppo_clip_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 3), behaviour_logprobs=old)


def test_masked_tokens_get_zero_gradient_in_every_loss():
    lp = torch.randn(2, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]])
    for agg in ("token-mean", "seq-mean-token-mean", "constant"):
        lp.grad = None
        loss, _ = L.ppo_clip_loss(
            lp,
            lp.detach() + 0.1,
            torch.tensor([1.0, -2.0]),
            mask,
            agg=agg,
            constant=9.0,
            ref_logprobs=torch.zeros(2, 5),
            kl_coef=0.1,
        )
        loss.backward()
        assert (lp.grad[mask == 0] == 0).all() and (lp.grad[mask == 1] != 0).all()


def test_gspo_sequence_ratio_value_and_gradient():
    lp = torch.tensor([[0.0, -1.0, 5.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    log_s = L.gspo_log_ratio(lp, old, mask)
    assert log_s[0, :2].tolist() == pytest.approx([0.5, 0.5])  # mean of (1, 0) over the agent tokens
    (log_s * mask).sum().backward()
    assert lp.grad.tolist() == [[1.0, 1.0, 0.0]]


def test_k3_kl_is_zero_at_equality_and_positive_elsewhere():
    x = torch.tensor([-1.0, -2.0])
    assert L.k3_kl(x, x).tolist() == [0.0, 0.0]
    assert L.k3_kl(torch.tensor([0.0]), torch.tensor([math.log(0.5)])).item() == pytest.approx(
        0.5 - math.log(0.5) - 1
    )


def test_masked_nll_matches_cross_entropy_on_the_masked_positions():
    logits = torch.randn(2, 3, 11)
    targets = torch.randint(0, 11, (2, 3))
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    ce = torch.nn.functional.cross_entropy(logits[mask.bool()], targets[mask.bool()])
    assert L.masked_nll(logits, targets, mask).item() == pytest.approx(ce.item(), rel=1e-6)


def test_aggregate_modes():
    per = torch.tensor([[2.0, 2.0, 0.0], [6.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert L.aggregate(per, m, "token-mean").item() == pytest.approx(10 / 3)
    assert L.aggregate(per, m, "seq-mean-token-mean").item() == pytest.approx(4.0)
    assert L.aggregate(per, m, "constant", constant=5.0).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        L.aggregate(per, m, "sum")
