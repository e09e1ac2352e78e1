"""Exports of trajectory records to the formats trainers read.

- ``trl-sft``: TRL's conversational language-modeling format, ``{"messages", "tools"}``, with
  assistant tool calls as OpenAI ``tool_calls`` (arguments as a JSON string) and ``tools`` as a
  JSON string of the env's tool schemas (TRL's SFT and DPO trainers decode it).
- ``trl-dpo``: TRL's conversational preference format with an explicit prompt,
  ``{"prompt", "chosen", "rejected", "tools"}``; both sides come from the same (env, task_id):
  chosen is the best ``ok`` record, rejected the worst lower-scoring record whose status is
  evidence and whose completion is not empty (a truncated run that stopped where the chosen one
  went on shares its whole conversation with the prompt, so it is passed over).
- ``ms-swift``: ms-swift's agent format, ``{"tools", "messages"}`` with ``tool_call`` and
  ``tool_response`` roles, the call's content being ``{"name", "arguments"}`` as JSON.
- ``hf``: a Hugging Face ``datasets`` directory (``Dataset.save_to_disk``) holding every field of
  the records (messages, tools, env, task_id, score, status, metadata as JSON, token record).

Every output is written to a temporary path and renamed into place, so a killed export leaves the
previous output (or none), never half of one. An export with nothing to write (no records, or no
preference pair) is an error that says why, not an empty file.

Assistant replies written as text (``<tool_call>`` blocks, as a model samples them) are turned
into structured ``tool_calls`` for every format except ``hf``, which stays lossless.

From the command line::

    agentgym export kept.jsonl --format trl-sft --out sft.jsonl
    agentgym export raw.jsonl --format trl-dpo --out pairs.jsonl
    agentgym export kept.jsonl --format hf --out kept_ds/
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from agentgym.data.filter import Record, checked_records, no_records_message, rank_key, write_records
from agentgym.parsing import parse_tool_calls, strip_tool_calls
from agentgym.types import EVIDENCE_STATUSES, Message, Trajectory, iter_jsonl

FORMATS = ("trl-sft", "trl-dpo", "ms-swift", "hf")

ToolLookup = Callable[[Record], "list[dict[str, Any]] | None"]
_WARNED: set[str] = set()


def env_tools(record: Record) -> list[dict[str, Any]] | None:
    """The tool schemas shown to the model for a record: its ``tools`` (or ``metadata["tools"]``
    from an older producer), else those of its env made with its ``env_kwargs``; None (with one
    warning per env) when the env cannot be made here."""
    for stored in (record.get("tools"), (record.get("metadata") or {}).get("tools")):
        if isinstance(stored, list):
            return stored
    from agentgym.registry import env_tool_schemas

    env_id = str(record.get("env", ""))
    try:
        return env_tool_schemas(env_id, record.get("env_kwargs"))
    except ValueError as e:
        if env_id not in _WARNED:
            _WARNED.add(env_id)
            print(f"agentgym export: {e}; rows get tools=null", file=sys.stderr)
        return None


def normalize_message(m: Message) -> Message:
    """A copy of a message with text tool calls turned into structured ``tool_calls``.

    >>> normalize_message({"role": "assistant", "content": 'ok <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'})
    {'role': 'assistant', 'content': 'ok', 'tool_calls': [{'id': 'call_0', 'type': 'function', 'function': {'name': 'f', 'arguments': '{"x": 1}'}}]}
    >>> normalize_message({"role": "assistant", "content": 'Checking. [TOOL_CALLS][{"name": "f", "arguments": {}}]'})["content"]
    'Checking.'
    """
    out: Message = dict(m)  # type: ignore[assignment]
    if m.get("role") != "assistant" or m.get("tool_calls"):
        return out
    text = m.get("content") or ""
    parsed = parse_tool_calls(text)
    if parsed.tool_calls and not parsed.errors:
        out["content"] = strip_tool_calls(text)
        out["tool_calls"] = parsed.tool_calls
    return out


def _messages(record: Record) -> list[Message]:
    return [normalize_message(m) for m in record["messages"]]


def _tools_json(record: Record, tools: ToolLookup) -> str | None:
    schemas = tools(record)
    return None if schemas is None else json.dumps(schemas, ensure_ascii=False)


def to_trl_sft(records: Iterable[Record], tools: ToolLookup = env_tools) -> list[dict[str, Any]]:
    """TRL conversational rows ``{"messages", "tools"}``, one per record."""
    return [{"messages": _messages(r), "tools": _tools_json(r, tools)} for r in records]


def split_prompt(chosen: list[Message], rejected: list[Message]) -> int:
    """Length of the shared prompt of two conversations: their common prefix, cut back so it
    ends before an assistant turn (the completions start with the first assistant reply that
    differs or follows it)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1].get("role") == "assistant":
        n -= 1
    return n


def _completions_differ(chosen: Record, rejected: Record) -> bool:
    c, r = _messages(chosen), _messages(rejected)
    n = split_prompt(c, r)
    return n < len(c) and n < len(r)


def _evidence_by_task(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    """The records whose status is evidence (ok or truncated), grouped by (env, task_id)."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r["status"] in EVIDENCE_STATUSES:
            groups[(str(r["env"]), str(r["task_id"]))].append(r)
    return groups


def preference_pairs(records: Iterable[Record], margin: float = 0.0) -> list[tuple[Record, Record]]:
    """One (chosen, rejected) pair per (env, task_id): chosen is the best record with status
    ``ok``, rejected the worst record whose status is evidence (ok or truncated), whose score is
    below the chosen one's by more than 0 and at least ``margin``, and whose conversation is not
    a prefix of the chosen one's (its completion would be empty). Infrastructure failures are
    never used."""
    pairs = []
    for ranked in (sorted(g, key=rank_key) for g in _evidence_by_task(records).values()):
        ok = [r for r in ranked if r["status"] == "ok"]
        if not ok:
            continue
        chosen = ok[0]
        for rejected in reversed(ranked):
            gap = float(chosen["score"]) - float(rejected["score"])
            if gap <= 1e-12 or gap < margin - 1e-12:
                break
            if _completions_differ(chosen, rejected):
                pairs.append((chosen, rejected))
                break
    return pairs


def no_pairs_message(records: list[Record], margin: float) -> str:
    """Why a set of records gives no preference pair, counted per (env, task_id)."""
    groups = _evidence_by_task(records)
    tasks = len({(str(r["env"]), str(r["task_id"])) for r in records})
    single = no_ok = no_gap = prefix = 0
    for g in groups.values():
        ok = sorted((r for r in g if r["status"] == "ok"), key=rank_key)
        lower = [r for r in g if ok and float(ok[0]["score"]) - float(r["score"]) >= max(margin, 1e-12)]
        if len(g) < 2:
            single += 1
        elif not ok:
            no_ok += 1
        elif not lower:
            no_gap += 1
        else:
            prefix += 1
    return (
        f"no preference pairs in {len(records)} records on {tasks} tasks: a pair needs, on one (env, "
        "task_id), a record with status ok and an ok or truncated record scoring lower by more than 0 "
        f"and at least --margin ({margin:g}). {tasks - len(groups) + single} task(s) have fewer than "
        f"two such records, {no_ok} have no ok record, {no_gap} have no lower score, {prefix} have "
        "lower-scoring records that only repeat the start of the best one. Sample several per task "
        "(agentgym generate sample --n-per-task 4) and export the raw file, not filtered data"
    )


def to_trl_dpo(
    records: Iterable[Record], margin: float = 0.0, tools: ToolLookup = env_tools
) -> list[dict[str, Any]]:
    """TRL conversational preference rows ``{"prompt", "chosen", "rejected", "tools"}``."""
    rows = []
    for chosen, rejected in preference_pairs(records, margin):
        c, r = _messages(chosen), _messages(rejected)
        n = split_prompt(c, r)
        rows.append(
            {"prompt": c[:n], "chosen": c[n:], "rejected": r[n:], "tools": _tools_json(chosen, tools)}
        )
    return rows


def _swift_messages(messages: list[Message]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            if m.get("content"):
                out.append({"role": "assistant", "content": m["content"]})
            for call in m["tool_calls"]:
                fn = call["function"]
                try:
                    args = (
                        json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
                    )
                except json.JSONDecodeError:
                    args = fn["arguments"]
                out.append(
                    {
                        "role": "tool_call",
                        "content": json.dumps({"name": fn["name"], "arguments": args}, ensure_ascii=False),
                    }
                )
        elif role == "tool":
            out.append({"role": "tool_response", "content": m.get("content") or ""})
        else:
            out.append({"role": str(role), "content": m.get("content") or ""})
    return out


def to_ms_swift(records: Iterable[Record], tools: ToolLookup = env_tools) -> list[dict[str, Any]]:
    """ms-swift agent rows ``{"tools", "messages"}`` with ``tool_call`` / ``tool_response`` roles."""
    return [{"tools": _tools_json(r, tools), "messages": _swift_messages(_messages(r))} for r in records]


def to_hf_rows(records: Iterable[Record], tools: ToolLookup = env_tools) -> list[dict[str, Any]]:
    """Lossless rows for a ``datasets.Dataset``: the record's fields, metadata, tools and env
    kwargs as JSON strings (their keys differ from record to record) and the token record as
    three list columns."""
    rows = []
    for r in records:
        tok = r.get("tokens") or {}
        rows.append(
            {
                "messages": r["messages"],
                "tools": _tools_json(r, tools),
                "env": str(r["env"]),
                "task_id": str(r["task_id"]),
                "score": float(r["score"]),
                "status": r["status"],
                "metadata": json.dumps(r.get("metadata") or {}, ensure_ascii=False, sort_keys=True),
                "env_kwargs": None
                if r.get("env_kwargs") is None
                else json.dumps(r["env_kwargs"], ensure_ascii=False, sort_keys=True),
                "token_ids": tok.get("ids"),
                "token_mask": tok.get("mask"),
                "token_logprobs": tok.get("logprobs"),
            }
        )
    return rows


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def record_from_hf_row(row: dict[str, Any]) -> Record:
    """The JSONL record back from a row of an ``hf`` export (Arrow fills absent message keys
    with None; those are dropped)."""
    record: Record = {
        "messages": _drop_none(row["messages"]),
        "env": row["env"],
        "task_id": row["task_id"],
        "score": row["score"],
        "status": row["status"],
        "metadata": json.loads(row["metadata"]),
    }
    if row.get("tools") is not None:  # the schemas shown to the model (looked up for older records)
        record["tools"] = json.loads(row["tools"])
    if row.get("env_kwargs") is not None:
        record["env_kwargs"] = json.loads(row["env_kwargs"])
    if row.get("token_ids") is not None:
        record["tokens"] = {
            "ids": row["token_ids"],
            "mask": row["token_mask"],
            "logprobs": row["token_logprobs"],
        }
    return record


def save_dataset_dir(rows: list[dict[str, Any]], out: str | os.PathLike[str]) -> None:
    """``Dataset.save_to_disk`` into a temporary directory beside ``out``, then swapped into place."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("the hf export needs the datasets package: pip install 'agentgym[train]'") from e
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; the hf format writes a directory")
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        datasets.Dataset.from_list(rows).save_to_disk(tmp)
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
            os.replace(out, os.path.join(old, name))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_records(
    records: list[Record | Trajectory], fmt: str, out: str | os.PathLike[str], margin: float = 0.0
) -> int:
    """Write ``records`` in format ``fmt`` to ``out`` (a JSONL file, or a directory for ``hf``);
    returns the number of rows written. Raises ``ValueError`` (and writes nothing) when there is
    nothing to write, and ``RecordError`` for a record that breaks the schema."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    recs = checked_records(records)
    if not recs:
        raise ValueError("nothing to export: no records")
    if fmt == "trl-sft":
        rows = to_trl_sft(recs)
    elif fmt == "trl-dpo":
        rows = to_trl_dpo(recs, margin=margin)
        if not rows:
            raise ValueError(no_pairs_message(recs, margin))
    elif fmt == "ms-swift":
        rows = to_ms_swift(recs)
    else:
        save_dataset_dir(to_hf_rows(recs), out)
        return len(recs)
    write_records(out, rows)
    return len(rows)


def export_file(
    path: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], margin: float = 0.0
) -> tuple[int, int, list[tuple[int, str]]]:
    """Export a JSONL file of trajectories. Returns (records read, rows written, malformed lines
    as (line number, reason)); malformed lines are skipped and reported."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    bad: list[tuple[int, str]] = []
    records = [r for _, r in iter_jsonl(path, errors="skip", report=lambda n, why: bad.append((n, why)))]
    if not records:
        raise ValueError(f"nothing to export: {no_records_message(path, bad)}")
    return len(records), export_records(records, fmt, out, margin=margin), bad
