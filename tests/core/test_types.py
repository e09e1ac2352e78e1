import json

import pytest

from agentgym.types import RecordError, Trajectory, iter_jsonl, load_trajectories, tool_call, write_jsonl


def _traj(**kw):
    base = dict(
        messages=[
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [tool_call("calculator", {"expression": "2+2"})],
            },
            {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "4"},
            {"role": "assistant", "content": "4"},
        ],
        env="toy/calculator-v0",
        task_id="calc-1",
        score=1.0,
        metadata={"sample": 0},
    )
    base.update(kw)
    return Trajectory(**base)


def test_record_round_trip_with_tokens(tmp_path):
    t = _traj(tokens=[1, 2, 3], mask=[0, 1, 1], logprobs=[0.0, -0.5, -0.25])
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [t, _traj(task_id="calc-2", status="truncated", score=0.0)])
    back = load_trajectories(path)
    assert back[0] == t
    assert back[1].status == "truncated" and back[1].tokens is None
    record = json.loads(path.read_text().splitlines()[0])
    assert set(record) == {"messages", "env", "task_id", "score", "status", "metadata", "tokens"}
    assert record["tokens"] == {"ids": [1, 2, 3], "mask": [0, 1, 1], "logprobs": [0.0, -0.5, -0.25]}


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"env": "x", "task_id": "1", "score": 1, "status": "ok"}', "missing field 'messages'"),
    (
        '{"messages": [{"role": "robot"}], "env": "x", "task_id": "1", "score": 1, "status": "ok"}',
        "messages[0]",
    ),
    ('{"messages": [], "env": "x", "task_id": "1", "score": NaN, "status": "ok"}', "finite number"),
    ('{"messages": [], "env": "x", "task_id": "1", "score": "high", "status": "ok"}', "finite number"),
    (
        '{"messages": [], "env": "x", "task_id": "1", "score": 1, "status": "great"}',
        "'status' must be one of",
    ),
    (
        '{"messages": [], "env": "x", "task_id": "1", "score": 1, "status": "ok", "tokens": {"ids": [1, 2], "mask": [1]}}',
        "tokens.mask has 1 entries but tokens.ids has 2",
    ),
]


@pytest.mark.parametrize("line,reason", BAD_LINES)
def test_loader_names_line_number_and_reason(tmp_path, line, reason):
    good = json.dumps(_traj().to_record())
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{good}\n{line}\n{good}\n")
    with pytest.raises(RecordError) as e:
        load_trajectories(path)
    assert "bad.jsonl:4: " in str(e.value)
    assert reason in str(e.value)
    # In skip mode the bad line is reported with its number and every good record is kept.
    seen = []
    records = list(iter_jsonl(path, errors="skip", report=lambda n, why: seen.append((n, why))))
    assert [n for n, _ in records] == [1, 3, 5]
    assert len(seen) == 1 and seen[0][0] == 4 and reason in seen[0][1]


def test_non_finite_score_is_never_written(tmp_path):
    with pytest.raises(RecordError):
        write_jsonl(tmp_path / "x.jsonl", [_traj(score=float("nan"))])


def test_is_evidence():
    assert _traj(status="ok").is_evidence and _traj(status="truncated").is_evidence
    assert not any(_traj(status=s).is_evidence for s in ("env_error", "policy_error", "timeout"))


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"score": ' + b"9" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
        (
            b'{"messages": [], "env": "e", "task_id": "a", "score": 0, "status": "ok", "tokens": {"ids": [1], "mask": 1}}',
            "tokens.mask must be a list",
        ),
        (
            b'{"messages": [{"role": "assistant", "tool_calls": "x"}], "env": "e", "task_id": "a", "score": 0, "status": "ok"}',
            "messages[0].tool_calls must be a list",
        ),
    ],
)
def test_loader_names_the_line_of_any_malformed_record(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [_traj()])
    with open(path, "ab") as f:
        f.write(line + b"\n")
    with pytest.raises(RecordError) as e:
        load_trajectories(path)
    assert str(e.value).startswith(f"{path}:2: ") and reason in str(e.value), str(e.value)
    assert len(load_trajectories(path, errors="skip")) == 1
