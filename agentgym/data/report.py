"""Flywheel metrics, the round table and the plots.

Per round t the flywheel records the pass rate p_t of the policy after the round (p_0: before
any training), the yield (kept / generated), generation passes per kept trajectory, tokens, wall
time, and the odds multiplier ``g_t = odds(p_t) / odds(p_{t-1})`` with ``odds(p) = p / (1 - p)``.
Where p is 0 or 1 the odds are 0 or infinite and g_t is reported as ``null`` with a note saying
why; ``g_smoothed`` is always finite, computed from counts with the Haldane-Anscombe correction
(half a pass and half a failure added to each side).

    agentgym report runs/flywheel          # table + plots/pass_rate.png, plots/cost_per_kept.png
    agentgym report runs/train/sft         # a training run: loss table + plots/loss.png

>>> odds_multiplier(0.5, 0.75)
(3.0, None)
>>> odds_multiplier(0.0, 0.25)
(None, 'p_prev = 0: the odds grew from 0, an infinite multiplier')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def odds(p: float) -> float:
    """p / (1 - p); infinite at p = 1."""
    return float("inf") if p >= 1.0 else p / (1.0 - p)


def odds_multiplier(p_prev: float | None, p: float | None) -> tuple[float | None, str | None]:
    """``(g, note)``: g = odds(p) / odds(p_prev) when finite and defined, else None and the reason."""
    if p_prev is None or p is None:
        return None, "no pass rate measured"
    if p_prev <= 0.0:
        return (
            (None, "p_prev = 0 and p = 0: no evidence of change")
            if p <= 0.0
            else (
                None,
                "p_prev = 0: the odds grew from 0, an infinite multiplier",
            )
        )
    if p_prev >= 1.0:
        return (None, "p_prev = 1 and p = 1: saturated") if p >= 1.0 else (0.0, None)
    if p >= 1.0:
        return None, "p = 1: the odds became infinite"
    return odds(p) / odds(p_prev), None


def smoothed_multiplier(passed_prev: int, n_prev: int, passed: int, n: int) -> float | None:
    """The odds multiplier from counts, with half a pass and half a failure added to each side.

    >>> round(smoothed_multiplier(0, 10, 5, 10), 3)
    21.0
    """
    if n_prev <= 0 or n <= 0:
        return None
    return ((passed + 0.5) / (n - passed + 0.5)) / ((passed_prev + 0.5) / (n_prev - passed_prev + 0.5))


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = [
    # header, width, digits, where the value is read: (row key) or (stage, key)
    ("samples", 7, 3, ("generate", "samples")),
    ("kept", 5, 3, ("kept",)),
    ("yield", 6, 3, ("yield",)),
    ("passes/kept", 11, 1, ("passes_per_kept",)),
    ("gen p", 6, 3, ("generate", "pass_rate")),
    ("p_t", 6, 3, ("p",)),
    ("g_t", 6, 2, ("g",)),
    ("g~", 6, 2, ("g_smoothed",)),
    ("tokens", 8, 3, ("tokens",)),
    ("wall s", 7, 1, ("wall_s",)),
    ("s/kept", 7, 2, ("seconds_per_kept",)),
]
"""the columns of the flywheel table after round and generator"""


def _cell(row: dict[str, Any], where: tuple[str, ...]) -> Any:
    value: Any = row
    for key in where:
        value = (value or {}).get(key)
    return value


def format_table(report: dict[str, Any]) -> str:
    """The per-round table of a flywheel report, its arms below the rounds."""
    rows = [(0, "(start)", {"p": (report.get("baseline") or {}).get("p")})] if report.get("baseline") else []
    rows += [(r["round"], str(r.get("generator", "")), r) for r in report.get("rounds", [])]
    rows += [("", f"{a['arm']} arm", a) for a in report.get("arms", [])]
    w = max([9] + [len(label) for _, label, _ in rows])
    lines = [
        f"flywheel on {report.get('env', '?')}: {report.get('run_dir', '')}",
        f"{'round':>5} {'generator':<{w}} " + " ".join(f"{h:>{width}}" for h, width, _, _ in COLUMNS),
    ]
    for first, label, row in rows:
        cells = " ".join(f"{_fmt(_cell(row, where), digits):>{width}}" for _, width, digits, where in COLUMNS)
        lines.append(
            f"{first:>5} {label:<{w}} {cells}".rstrip() + ("" if row.get("complete", True) else "  (running)")
        )
    notes = [
        f"round {r['round']}: g_t undefined ({r['g_note']})"
        for r in report.get("rounds", [])
        if r.get("g_note")
    ]
    return "\n".join(lines + notes)


def plot_flywheel(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``pass_rate.png`` (p_t and the generation pass rate by round) and ``cost_per_kept.png``
    (generation passes and seconds per kept trajectory by round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rounds = report.get("rounds", [])
    base = report.get("baseline") or {}
    xs = ([0] if base.get("p") is not None else []) + [r["round"] for r in rounds if r.get("p") is not None]
    ps = ([base["p"]] if base.get("p") is not None else []) + [
        r["p"] for r in rounds if r.get("p") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, ps, "o-", label="p_t (evaluation after the round)")
    gx = [r["round"] for r in rounds if (r.get("generate") or {}).get("pass_rate") is not None]
    gy = [
        r["generate"]["pass_rate"] for r in rounds if (r.get("generate") or {}).get("pass_rate") is not None
    ]
    ax.plot(gx, gy, "s--", label="pass rate of generated samples")
    ax.set(
        xlabel="round",
        ylabel="pass rate",
        ylim=(-0.02, 1.02),
        title=f"pass rate by round: {report.get('env', '')}",
    )
    ax.set_xticks(sorted(set(xs + gx)) or [0])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p1 = out / "pass_rate.png"
    fig.savefig(p1, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    cx = [r["round"] for r in rounds if r.get("passes_per_kept") is not None]
    ax.plot(
        cx, [r["passes_per_kept"] for r in rounds if r.get("passes_per_kept") is not None], "o-", color="C0"
    )
    ax.set(xlabel="round", ylabel="generation passes per kept trajectory", title="cost per kept trajectory")
    ax.set_xticks(cx or [1])
    ax2 = ax.twinx()
    sx = [r["round"] for r in rounds if r.get("seconds_per_kept") is not None]
    ax2.plot(
        sx,
        [r["seconds_per_kept"] for r in rounds if r.get("seconds_per_kept") is not None],
        "s--",
        color="C1",
    )
    ax2.set_ylabel("generation seconds per kept trajectory", color="C1")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p2 = out / "cost_per_kept.png"
    fig.savefig(p2, dpi=100)
    plt.close(fig)
    return [p1, p2]


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a trainer's ``metrics.jsonl`` (a line cut off by a running writer is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def training_table(rows: list[dict[str, Any]], max_rows: int = 20) -> str:
    """Loss (and reward, where the trainer logs it) by step, thinned to ``max_rows`` rows; GRPO's
    step groups (``advantage: gigpo``) and tasks in band (``curriculum: band``) where logged.

    >>> print(training_table([{"trainer": "grpo", "step": 1, "loss": 0.5, "pool_in_band": 3}]))
    trainer    step         loss pool_in_band
    grpo          1       0.5000            3
    running: 1 steps logged so far
    """
    steps = [r for r in rows if "event" not in r]
    shown_keys = (
        "loss",
        "mean_score",
        "pass_rate",
        "reward_accuracy",
        "eval_loss",
        "step_groups",
        "pool_in_band",
    )
    keys = [k for k in (*shown_keys, "elapsed_s") if any(k in r for r in steps)]
    stride = max(1, -(-len(steps) // max_rows))
    shown = steps[::stride]
    if steps and shown[-1] is not steps[-1]:
        shown.append(steps[-1])
    lines = [f"{'trainer':<8} {'step':>6} " + " ".join(f"{k:>12}" for k in keys)]
    for r in shown:
        lines.append(
            f"{str(r.get('trainer', '')):<8} {r.get('step', ''):>6} "
            + " ".join(f"{_fmt(r.get(k), 4):>12}" for k in keys)
        )
    done = [r for r in rows if r.get("event") == "done"]
    if done:
        lines.append(
            "done: "
            + ", ".join(f"{k}={_fmt(v, 4)}" for k, v in done[-1].items() if k not in ("trainer", "event"))
        )
    else:
        lines.append(f"running: {len(steps)} steps logged so far")
    return "\n".join(lines)


def plot_training(rows: list[dict[str, Any]], out_dir: str | os.PathLike[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in rows if "event" not in r and "step" in r]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in ("loss", "mean_score", "pass_rate", "reward_margin"):
        pts = [(r["step"], r[key]) for r in steps if isinstance(r.get(key), int | float)]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([s for s, _ in pts], [v for _, v in pts], "-")
        ax.set(xlabel="optimizer step", ylabel=key, title=f"{key} by step")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
