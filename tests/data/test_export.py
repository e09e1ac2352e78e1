"""Each export format loads in its consumer: datasets (json loader, load_from_disk) and TRL."""

from __future__ import annotations

import json

import pytest

from agentgym.data.export import export_file, export_records, preference_pairs, record_from_hf_row
from agentgym.data.filter import filter_quality
from agentgym.rollout import run_rollouts
from agentgym.testing import need
from agentgym.types import iter_jsonl, write_jsonl

ENV = "toy/calculator-v0"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Real rollouts on the calculator: the scripted solver (passes) and random tool calls
    written as text (fails), on the same six tasks."""
    d = tmp_path_factory.mktemp("raw")
    good = run_rollouts(ENV, "scripted", n=6, seed=3, progress=False)
    bad = run_rollouts(ENV, "random", n=6, group=2, seed=3, progress=False)
    path = d / "raw.jsonl"
    write_jsonl(path, good + bad)
    assert [t.score for t in good] == [1.0] * 6 and any(t.score == 0.0 for t in bad)
    return path


def records(path):
    return [r for _, r in iter_jsonl(path)]


def test_trl_sft_loads_with_datasets_and_renders_with_trl(raw, tmp_path):
    need(module="trl", install="pip install trl")
    from agentgym.policies.tiny import build_tokenizer
    from datasets import load_dataset
    from trl.data_utils import apply_chat_template, is_conversational

    scripted = [r for r in records(raw) if r["metadata"]["policy"] == "scripted"]
    kept = filter_quality(scripted, min_score=1.0, dedup=True)
    out = tmp_path / "sft.jsonl"
    assert export_records(kept, "trl-sft", out) == 6
    ds = load_dataset("json", data_files=str(out), split="train")
    assert ds.column_names == ["messages", "tools"] and len(ds) == 6
    tok = build_tokenizer()
    for row, src in zip(ds, kept, strict=True):
        assert is_conversational(row)
        tools = json.loads(row["tools"])
        assert [t["function"]["name"] for t in tools] == ["calculator"]
        text = apply_chat_template(row, tok, tools=tools)["text"]
        expr = next(m for m in src["messages"] if m["role"] == "assistant")["tool_calls"][0]["function"][
            "arguments"
        ]
        answer = src["messages"][-1]["content"]
        assert f'{{"name": "calculator", "arguments": {expr}}}' in text
        assert f"<|im_start|>tool\n{answer}<|im_end|>" in text
        assert text.endswith(f"<|im_start|>assistant\n{answer}<|im_end|>\n")
        system_turn = text.split("<|im_start|>user")[0]
        assert "calculator" in system_turn and "expression" in system_turn  # the tools reached the template


def test_trl_dpo_pairs_come_from_the_same_task(raw, tmp_path):
    need(module="trl", install="pip install trl")
    from agentgym.policies.tiny import build_tokenizer
    from datasets import load_dataset
    from trl.data_utils import apply_chat_template, is_conversational

    recs = records(raw)
    pairs = preference_pairs(recs)
    # a pair for every task where some evidence sample scored below the best
    worst = {}
    for r in recs:
        if r["status"] in ("ok", "truncated"):
            worst[r["task_id"]] = min(worst.get(r["task_id"], 1.0), r["score"])
    assert len(pairs) == sum(w < 1.0 for w in worst.values()) >= 4
    for chosen, rejected in pairs:
        assert chosen["task_id"] == rejected["task_id"] and chosen["score"] > rejected["score"]
        assert chosen["status"] == "ok"
    out = tmp_path / "dpo.jsonl"
    read, written, bad = export_file(raw, "trl-dpo", out)
    assert (read, written, bad) == (18, len(pairs), [])
    ds = load_dataset("json", data_files=str(out), split="train")
    assert set(ds.column_names) == {"prompt", "chosen", "rejected", "tools"}
    tok = build_tokenizer()
    for row, (chosen, _) in zip(ds, pairs, strict=True):
        assert is_conversational(row)
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][1]["content"] == chosen["messages"][1]["content"]
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
        rendered = apply_chat_template(row, tok, tools=json.loads(row["tools"]))
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        assert rendered["chosen"].endswith(chosen["messages"][-1]["content"] + "<|im_end|>\n")
        assert rendered["chosen"] != rendered["rejected"]
    # random's text tool calls became structured calls in the rejected side
    calls = [m for row in ds for m in row["rejected"] if m.get("tool_calls")]
    assert calls and all("<tool_call>" not in (m["content"] or "") for m in calls)


def test_ms_swift_agent_format(raw, tmp_path):
    from datasets import load_dataset

    kept = [r for r in filter_quality(records(raw), min_score=1.0) if r["metadata"]["policy"] == "scripted"]
    out = tmp_path / "swift.jsonl"
    export_records(kept, "ms-swift", out)
    ds = load_dataset("json", data_files=str(out), split="train")
    assert ds.column_names == ["tools", "messages"] and len(ds) == 6
    for row, src in zip(ds, kept, strict=True):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "tool_call", "tool_response", "assistant"]
        call = json.loads(row["messages"][2]["content"])
        assert call["name"] == "calculator" and isinstance(call["arguments"], dict)
        assert (
            row["messages"][3]["content"] == row["messages"][4]["content"] == src["messages"][-1]["content"]
        )
        assert json.loads(row["tools"])[0]["function"]["name"] == "calculator"


def test_hf_directory_round_trips_losslessly(raw, tmp_path):
    from datasets import load_from_disk

    recs = records(raw)
    out = tmp_path / "ds"
    read, written, _ = export_file(raw, "hf", out)
    assert read == written == 18
    ds = load_from_disk(str(out))
    assert len(ds) == 18
    back = [record_from_hf_row(row) for row in ds]
    assert back == recs


def test_unknown_format_is_a_clear_error(raw, tmp_path):
    with pytest.raises(ValueError, match="choose one of trl-sft, trl-dpo, ms-swift, hf"):
        export_file(raw, "parquet", tmp_path / "x")


SWIFT_CHECK = """
import json, sys
from swift.dataset import load_dataset
train, val = load_dataset([sys.argv[1]], strict=True, remove_unused_columns=False)
print(json.dumps({"n": len(train), "rows": [dict(messages=r["messages"], tools=r["tools"]) for r in train]}))
"""


def swift_python() -> str:
    """An interpreter with ms-swift: $AGENTGYM_MS_SWIFT_PYTHON, else the .venv-swift that
    scripts/setup.sh builds (ms-swift pins datasets < 5 and trl < 1, so it lives in a virtualenv
    of its own), else this one when it imports swift."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    path = os.environ.get("AGENTGYM_MS_SWIFT_PYTHON")
    if path:
        return path
    layered = Path(__file__).parents[2] / ".venv-swift" / "bin" / "python"
    if layered.exists():
        return str(layered)
    need(
        module="swift",
        install="bash scripts/setup.sh (it builds .venv-swift with ms-swift), "
        "or set AGENTGYM_MS_SWIFT_PYTHON to a python that imports swift",
    )
    assert importlib.util.find_spec("swift") is not None
    return sys.executable


def test_ms_swift_loads_in_ms_swift(raw, tmp_path):
    import subprocess

    python = swift_python()
    recs = records(raw)
    out = tmp_path / "swift.jsonl"
    export_records(recs, "ms-swift", out)
    p = subprocess.run(
        [python, "-c", SWIFT_CHECK, str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr[-3000:]
    loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert loaded["n"] == len(recs) == 18
    for row, src in zip(loaded["rows"], recs, strict=True):
        assert row["tools"][0]["function"]["name"] == "calculator"
        calls = [json.loads(m["content"]) for m in row["messages"] if m["role"] == "tool_call"]
        responses = [m["content"] for m in row["messages"] if m["role"] == "tool_response"]
        assert responses == [m["content"] for m in src["messages"] if m["role"] == "tool"]
        assert len(calls) == len(responses) and all(set(c) == {"name", "arguments"} for c in calls)
        assert row["messages"][1] == {"role": "user", "content": src["messages"][1]["content"]}


def test_cli_export_reports_counts_and_bad_lines(raw, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "raw.jsonl"
    lines = raw.read_text().splitlines()
    src.write_text("\n".join(lines[:3] + ["not json"] + lines[3:]) + "\n")
    out = tmp_path / "pairs.jsonl"
    cmd = [sys.executable, "-m", "agentgym.cli", "export", str(src), "--format", "trl-dpo", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    n = len(out.read_text().splitlines())
    assert f"exported {n} preference pairs from 18 records (1 malformed lines skipped)" in p.stdout
    assert "raw.jsonl:4: skipped: invalid JSON" in p.stderr
    p = subprocess.run(
        cmd[:-4] + ["--format", "csv", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and "invalid choice: 'csv'" in p.stderr


def conv(task, score, status="ok", tail=()):
    """A calculator-shaped record: system, user, one tool call and its result, then ``tail``."""
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c0",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'},
            }
        ],
    }
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": f"what is 1+1? ({task})"},
        call,
        {"role": "tool", "content": "2", "tool_call_id": "c0"},
        *tail,
    ]
    return {
        "messages": msgs,
        "env": ENV,
        "task_id": task,
        "score": score,
        "status": status,
        "metadata": {"tools": []},
    }


def test_nothing_to_export_is_a_clear_error_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    answer = ({"role": "assistant", "content": "2"},)
    for fmt in ("trl-sft", "trl-dpo", "ms-swift", "hf"):
        with pytest.raises(ValueError, match="nothing to export: no records"):
            export_records([], fmt, tmp_path / fmt)
    # one record per task: SFT rows, but no preference pair
    single = [conv("a", 1.0, tail=answer), conv("b", 0.0, tail=({"role": "assistant", "content": "3"},))]
    assert export_records(single, "trl-sft", tmp_path / "sft.jsonl") == 2
    with pytest.raises(
        ValueError, match=r"no preference pairs in 2 records on 2 tasks.*2 task\(s\) have fewer than two"
    ):
        export_records(single, "trl-dpo", tmp_path / "dpo.jsonl")
    src = tmp_path / "single.jsonl"
    write_jsonl(src, single)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path, fmt, says in ((src, "trl-dpo", "no preference pairs"), (empty, "trl-sft", "holds no records")):
        out = tmp_path / f"out-{fmt}"
        p = subprocess.run(
            [sys.executable, "-m", "agentgym.cli", "export", str(path), "--format", fmt, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 2 and says in p.stderr and not out.exists(), p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["empty.jsonl", "sft.jsonl", "single.jsonl"]


def test_dpo_never_pairs_an_empty_rejected_completion(tmp_path):
    answer = ({"role": "assistant", "content": "2"},)
    chosen = conv("t", 1.0, tail=answer)
    cut_short = conv("t", 0.0, status="truncated")  # stopped after the tool result: a prefix of chosen
    wrong = conv("t", 0.5, tail=({"role": "assistant", "content": "3"},))
    pairs = preference_pairs([cut_short, chosen, wrong])
    assert pairs == [(chosen, wrong)]
    out = tmp_path / "dpo.jsonl"
    assert export_records([cut_short, chosen, wrong], "trl-dpo", out) == 1
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["chosen"] == list(answer) and row["rejected"] == [{"role": "assistant", "content": "3"}]
    assert row["prompt"] == chosen["messages"][:4]
    assert preference_pairs([cut_short, chosen]) == []
    with pytest.raises(ValueError, match="1 have lower-scoring records that only repeat the start"):
        export_records([cut_short, chosen], "trl-dpo", out)


def test_exports_are_never_half_written(tmp_path, monkeypatch):
    import datasets

    from agentgym.data import filter as filter_mod

    recs = [conv(f"t{i}", 1.0, tail=({"role": "assistant", "content": "2"},)) for i in range(3)]
    out = tmp_path / "sft.jsonl"
    out.write_text("previous\n")
    real = filter_mod.dump_record
    calls = []

    def killed_on_the_second_row(row):
        calls.append(row)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(row)

    monkeypatch.setattr(filter_mod, "dump_record", killed_on_the_second_row)
    with pytest.raises(KeyboardInterrupt):
        export_records(recs, "trl-sft", out)
    assert out.read_text() == "previous\n" and [x.name for x in tmp_path.iterdir()] == ["sft.jsonl"]
    monkeypatch.setattr(filter_mod, "dump_record", real)

    ds_dir = tmp_path / "ds"
    assert export_records(recs[:1], "hf", ds_dir) == 1
    real_save = datasets.Dataset.save_to_disk

    def killed_while_saving(self, path, **kw):
        real_save(self, path, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        export_records(recs, "hf", ds_dir)
    assert len(datasets.load_from_disk(str(ds_dir))) == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ds", "sft.jsonl"]
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real_save)
    assert export_records(recs, "hf", ds_dir) == 3 and len(datasets.load_from_disk(str(ds_dir))) == 3
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ds", "sft.jsonl"]
