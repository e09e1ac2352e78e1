"""``agentgym env serve``: any env over HTTP/WebSocket in the OpenEnv protocol, played by the
openenv-core package's own clients, with its limits (sessions, idle expiry, message size)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from agentgym.envs.toy import make_task

HERE = Path(__file__).resolve().parent

pytest.importorskip("fastapi", reason="pip install 'agentgym[serve]'")


def _ws(url: str, **kw):
    from websockets.sync.client import connect

    return connect(url + "/ws", open_timeout=10, **kw).__enter__()


def _ask(ws, message: dict) -> dict:
    ws.send(json.dumps(message))
    return json.loads(ws.recv(timeout=30))


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_the_openenv_core_client_plays_the_calculator_and_scores_1(served, openenv_python):
    server = served("toy/calculator-v0")
    tasks = [make_task(i, 2) for i in range(5)]
    payload = [{"task_id": t.task_id, "expression": t.info["expression"]} for t in tasks]
    out = subprocess.run(
        [str(openenv_python), str(HERE / "openenv_client_play.py"), server.url, json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tools"] == ["calculator"]
    for task, episode in zip(tasks, result["episodes"], strict=True):
        # the tool's result is the task's answer, and answering with it scores 1.0
        assert str(episode["result"]) == task.answer
        assert episode["reward"] == 1.0 and episode["done"] is True
        assert episode["steps"] == 2
    generic = result["generic"]
    assert generic["prompt"] == tasks[0].prompt
    [tool_message] = generic["tool_messages"]
    assert tool_message["role"] == "tool" and tool_message["name"] == "calculator"
    assert tool_message["content"] == tasks[0].answer
    assert generic["reward"] == 1.0 and generic["status"] == "ok"


def test_a_wrong_answer_a_bad_call_and_bad_messages_are_replies_not_crashes(served):
    server = served("toy/calculator-v0")
    task = make_task(7, 2)
    with _ws(server.ws) as ws:
        assert (
            _ask(ws, {"type": "step", "data": {"type": "message", "content": "1"}})["data"]["code"]
            == "SESSION_ERROR"
        )
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["data"]["code"] == "INVALID_JSON"
        assert _ask(ws, {"type": "jump"})["data"]["code"] == "UNKNOWN_TYPE"
        obs = _ask(ws, {"type": "reset", "data": {"task_id": task.task_id}})["data"]["observation"]
        assert obs["task_id"] == task.task_id and obs["messages"][-1]["content"] == task.prompt
        assert [s["function"]["name"] for s in obs["tool_schemas"]] == ["calculator"]
        # an unknown tool is an error observation (OpenEnv's tool_not_found) and the episode goes on
        step = _ask(ws, {"type": "step", "data": {"type": "call_tool", "tool_name": "nope", "arguments": {}}})
        assert step["data"]["observation"]["error"]["error_type"] == "tool_not_found"
        assert step["data"]["done"] is False
        bad = _ask(
            ws,
            {
                "type": "step",
                "data": {
                    "type": "call_tool",
                    "tool_name": "calculator",
                    "arguments": {"expression": "2 ** 99"},
                },
            },
        )
        assert bad["data"]["observation"]["result"].startswith("Error")
        # a tool call written in the text, as a model writes it, is parsed by the env
        text = f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{task.info["expression"]}"}}}}</tool_call>'
        step = _ask(
            ws,
            {"type": "step", "data": {"type": "message", "message": {"role": "assistant", "content": text}}},
        )
        assert step["data"]["observation"]["messages"][0]["content"] == task.answer
        end = _ask(ws, {"type": "step", "data": {"type": "message", "content": "-1"}})["data"]
        assert end["done"] is True and end["reward"] == 0.0 and end["observation"]["status"] == "ok"
        assert (
            _ask(ws, {"type": "step", "data": {"type": "message", "content": "1"}})["data"]["code"]
            == "SESSION_ERROR"
        )
        state = _ask(ws, {"type": "state"})["data"]
        assert state["step_count"] == 4 and state["done"] is True and state["score"] == 0.0
        # the session plays another episode
        obs = _ask(ws, {"type": "reset", "data": {"task_id": "calc-1"}})["data"]["observation"]
        assert obs["task_id"] == "calc-1"
        rpc = _ask(
            ws,
            {
                "type": "mcp",
                "data": {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": "calculator", "arguments": {"expression": "6 * 7"}},
                },
            },
        )
        assert rpc["data"] == {
            "jsonrpc": "2.0",
            "id": 3,
            "result": {"content": [{"type": "text", "text": "42"}], "isError": False},
        }


def test_http_routes(served):
    server = served("toy/calculator-v0")
    assert _get(server.url + "/health") == {"status": "healthy"}
    assert _get(server.url + "/tasks?n=3&seed=1")["task_ids"] == [
        "calc-1000000",
        "calc-1000001",
        "calc-1000002",
    ]
    assert "oneOf" in _get(server.url + "/schema")["action"]
    reset = _post(server.url + "/reset", {"task_id": "calc-2"})
    assert reset["observation"]["messages"][-1]["content"] == make_task(2, 2).prompt
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(server.url + "/step", {"action": {"type": "list_tools"}})
    assert e.value.code == 409 and "/ws" in e.value.read().decode()
    tools = _post(server.url + "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert tools["result"]["tools"][0]["name"] == "calculator"
    assert "inputSchema" in tools["result"]["tools"][0]


def test_session_cap_idle_expiry_and_message_bound(served):
    server = served(
        "toy/calculator-v0", "--max-sessions", "2", "--idle-timeout", "1", "--max-message-mb", "0.01"
    )
    a, b = _ws(server.ws), _ws(server.ws)
    assert _ask(a, {"type": "reset"})["type"] == "observation"
    assert _ask(b, {"type": "reset"})["type"] == "observation"
    with _ws(server.ws) as c:
        refused = json.loads(c.recv(timeout=10))
        assert refused["data"]["code"] == "CAPACITY_REACHED"
    # a message over 10 KiB is refused; the server goes on serving
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        a.send(json.dumps({"type": "step", "data": {"type": "message", "content": "x" * 20_000}}))
        a.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    # b says nothing for more than the idle timeout: the server closes its session
    time.sleep(2.5)
    expired = json.loads(b.recv(timeout=10))
    assert expired["data"]["code"] == "SESSION_ERROR" and "idle" in expired["data"]["message"]
    a.close()
    b.close()
    # both slots are free again
    with _ws(server.ws) as d, _ws(server.ws) as e:
        assert _ask(d, {"type": "reset"})["type"] == "observation"
        assert _ask(e, {"type": "reset"})["type"] == "observation"


def test_a_bad_env_id_fails_before_serving(tmp_path):
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "agentgym", "env", "serve", "toy/nope-v0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no env 'toy/nope-v0'" in out.stderr
