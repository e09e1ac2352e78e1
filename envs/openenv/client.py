"""A remote OpenEnv server as an env here: ``--env openenv:ws://HOST:PORT`` (a pool:
``openenv:URL1,URL2``; each env instance takes the next URL, so the runner's workers spread over
the servers).

One WebSocket session per env instance, kept across episodes. Three kinds of server are read:

- an agentgym server (``agentgym env serve``): each assistant turn is sent whole and the remote
  env parses it, so a remote episode is the same trajectory, token for token, as an in-process one;
  its score, status and breakdown come back with the last step;
- an OpenEnv MCP env (``list_tools`` / ``call_tool`` actions): its tools are the env's tools, each
  call a step, and the score the sum of the rewards;
- any other OpenEnv env: one tool, ``step``, whose arguments are the env's action (its JSON schema
  from ``/schema``).

A server that dies, refuses, does not answer within ``timeout`` seconds, or sends a message over
``max_message_mb`` or one that is not a JSON object raises, which the runner records as
``env_error`` (never a zero reward); the next episode connects again, to the next server of a
pool.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
import urllib.request
from typing import Any

from agentgym.env import ToolEnv
from agentgym.types import Message, Task

_next_server = itertools.count()


class RemoteEnvError(RuntimeError):
    """The OpenEnv server failed: unreachable, closed, too slow, or it answered with an error
    (``refused``: the server is up and said no to this message)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


def _urls(url: str | list[str]) -> list[str]:
    items = url if isinstance(url, list) else str(url).split(",")
    urls = [u.strip().rstrip("/") for u in items if u and u.strip()]
    if not urls:
        raise ValueError("openenv: give the server's address, e.g. openenv:ws://127.0.0.1:8000")
    for u in urls:
        if urllib.parse.urlparse(u).scheme not in ("ws", "wss", "http", "https"):
            raise ValueError(f"openenv: {u!r} is not an http(s):// or ws(s):// address")
    return urls


def _ws_url(url: str) -> str:
    parts = urllib.parse.urlparse(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path + "/ws"
    return urllib.parse.urlunparse(parts._replace(scheme=scheme, path=path))


def _http_url(url: str, route: str) -> str:
    parts = urllib.parse.urlparse(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.removesuffix("/ws") + route
    return urllib.parse.urlunparse(parts._replace(scheme=scheme, path=path))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) >= {"content"} and isinstance(value["content"], list):
        # an MCP CallToolResult: its text blocks
        texts = [b.get("text", "") for b in value["content"] if isinstance(b, dict)]
        if texts:
            return "\n".join(texts)
    return json.dumps(value, ensure_ascii=False, default=str)


class OpenEnvEnv(ToolEnv):
    """An env served in the OpenEnv protocol, played over one WebSocket session."""

    system_prompt = (
        "You act in an environment through its tools. When the task is done, reply without a tool call."
    )
    blocking = True  # every reset and step waits on the network

    def __init__(
        self,
        url: str | list[str],
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_message_mb: float = 64.0,
        max_turns: int | None = None,
        **kwargs: Any,
    ):
        self.urls = _urls(url)
        self.url = self.urls[next(_next_server) % len(self.urls)]
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_message_bytes = int(max_message_mb * (1 << 20))
        self._ws = None
        self._max_turns_given = max_turns is not None
        self.kind, self._schemas = self._discover()
        super().__init__(max_turns=max_turns, **kwargs)
        self._rewards: list[float] = []
        self._remote_end: dict[str, Any] | None = None

    # ----- the wire ----------------------------------------------------------------------------

    def _connect(self):
        if self._ws is not None:
            return self._ws
        from websockets.sync.client import connect

        errors = []
        # the assigned server first, then the rest of the pool
        start = self.urls.index(self.url)
        for url in self.urls[start:] + self.urls[:start]:
            try:
                # entered as a context manager (what websockets asks of a held connection)
                self._ws = connect(
                    _ws_url(url), open_timeout=self.connect_timeout, max_size=self.max_message_bytes
                ).__enter__()
                self.url = url
                return self._ws
            except Exception as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
        raise RemoteEnvError("no OpenEnv server answered: " + "; ".join(errors))

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return the reply's ``data``; any failure drops the connection and
        raises ``RemoteEnvError``."""
        ws = self._connect()
        try:
            ws.send(json.dumps(message))
            raw = ws.recv(timeout=self.timeout)
        except TimeoutError:
            self._drop()
            raise RemoteEnvError(
                f"the OpenEnv server at {self.url} gave no reply to {message.get('type')!r} within "
                f"{self.timeout:g} s (env kwarg timeout= raises the limit)"
            ) from None
        except Exception as e:
            self._drop()
            raise RemoteEnvError(f"the OpenEnv server at {self.url} failed: {type(e).__name__}: {e}") from e
        try:
            reply = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            self._drop()
            raise RemoteEnvError(
                f"the OpenEnv server at {self.url} sent a reply that is not JSON: {raw!r:.200}"
            ) from None
        if not isinstance(reply, dict):
            self._drop()
            raise RemoteEnvError(
                f"the OpenEnv server at {self.url} sent {reply!r:.200}, not a message object"
            )
        if reply.get("type") == "error":
            data = reply.get("data") or {}
            raise RemoteEnvError(
                f"the OpenEnv server at {self.url} answered {message.get('type')!r} with an error: "
                f"{data.get('message', data)} ({data.get('code', 'no code')})",
                refused=True,
            )
        data = reply.get("data")
        return data if isinstance(data, dict) else {}

    def _http(self, route: str) -> Any:
        with urllib.request.urlopen(_http_url(self.url, route), timeout=self.timeout) as r:
            return json.loads(r.read())

    def _discover(self) -> tuple[str, list[dict[str, Any]]]:
        """What kind of server this is, and its tools as OpenAI-style schemas."""
        try:
            data = self._send({"type": "step", "data": {"type": "list_tools"}})
        except RemoteEnvError as e:
            if not e.refused:  # unreachable or broken: nothing else to try
                raise
            data = None
        obs = (data or {}).get("observation") or {}
        if isinstance(obs.get("tool_schemas"), list):
            return "agentgym", obs["tool_schemas"]
        if isinstance(obs.get("tools"), list):
            schemas = []
            for t in obs["tools"]:
                params = t.get("input_schema") or t.get("inputSchema") or {"type": "object", "properties": {}}
                schemas.append(
                    {
                        "type": "function",
                        "function": {
                            "name": t["name"],
                            "description": t.get("description", ""),
                            "parameters": params,
                        },
                    }
                )
            return "mcp", schemas
        action = (self._http("/schema") or {}).get("action") or {"type": "object"}
        action = {
            **action,
            "properties": {k: v for k, v in action.get("properties", {}).items() if k != "metadata"},
        }
        action.pop("title", None)
        step = {
            "type": "function",
            "function": {
                "name": "step",
                "description": "Send one action to the environment.",
                "parameters": action,
            },
        }
        return "action", [step]

    # ----- the env -----------------------------------------------------------------------------

    def collect_tools(self) -> list:
        return []

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._schemas]

    @property
    def env_kwargs(self) -> dict[str, Any]:
        kwargs = super().env_kwargs
        kwargs.setdefault("url", ",".join(self.urls))
        return kwargs

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        if self.kind == "agentgym":
            return [str(t) for t in self._http(f"/tasks?n={int(n)}&seed={int(seed)}")["task_ids"]]
        return [f"seed-{seed * 1_000_000 + i}" for i in range(n)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:  # this side's generator too, as Gymnasium expects
            self._rng, self._pending_seed, self._np_random_seed = None, seed, seed
        task_id = (options or {}).get("task_id")
        data: dict[str, Any] = {}
        if self.kind == "agentgym":
            if seed is not None:
                data["seed"] = seed
            if task_id is not None:
                data["task_id"] = str(task_id)
        else:
            if task_id is not None and str(task_id).startswith("seed-"):
                data["seed"] = int(str(task_id)[5:])
            elif seed is not None:
                data["seed"] = seed
        reply = self._send({"type": "reset", "data": data})
        obs = reply.get("observation") or {}
        self.turns, self.done = 0, False
        self._rewards, self._remote_end = [], None
        if self.kind == "agentgym":
            messages = obs.get("messages") or []
            if not self._max_turns_given and isinstance(obs.get("max_turns"), int):
                self.max_turns = obs["max_turns"]
            task_id = obs.get("task_id") or task_id or ""
        else:
            messages = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self._prompt(obs)},
            ]
            task_id = task_id or (f"seed-{data['seed']}" if "seed" in data else "")
        prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        self.task = Task(task_id=str(task_id), prompt=prompt)
        self.trajectory = self.new_trajectory(messages, seed=seed, server=self.url)
        return [dict(m) for m in messages], {"task_id": self.task.task_id}

    @staticmethod
    def _prompt(obs: dict[str, Any]) -> str:
        for key in ("prompt", "message", "text", "question", "instruction"):
            if isinstance(obs.get(key), str) and obs[key]:
                return obs[key]
        return json.dumps({k: v for k, v in obs.items() if k != "metadata"}, ensure_ascii=False, default=str)

    def respond(self, action: Message) -> list[Message]:
        if self.kind == "agentgym":
            message = {k: v for k, v in action.items() if k in ("role", "content", "tool_calls")}
            reply = self._send({"type": "step", "data": {"type": "message", "message": message}})
            obs = reply.get("observation") or {}
            self._rewards.append(float(reply.get("reward") or 0.0))
            if reply.get("done"):
                self.done = True
                self._remote_end = {
                    k: obs[k] for k in ("status", "score", "breakdown", "verifier_errors") if k in obs
                }
                self._remote_end.setdefault("score", reply.get("reward"))
            return list(obs.get("messages") or [])
        replies, calls, decoded = self._plan(action)
        for i, call in enumerate(calls):
            replies.append(self._remote_call(call, decoded[i] if i < len(decoded) else None))
            if self.done:
                break
        return replies

    def _remote_call(self, call: Any, arguments: Any) -> Message:
        try:
            fn = call["function"]
            name, raw = fn["name"], fn.get("arguments", "{}")
            call_id = str(call.get("id", ""))
        except (KeyError, TypeError, AttributeError):
            return {"role": "tool", "name": "error", "content": "Error: malformed tool call"}
        out: Message = {"role": "tool", "tool_call_id": call_id, "name": str(name)}
        names = [s["function"]["name"] for s in self._schemas]
        if name not in names:
            out["content"] = f"Error: unknown tool {name!r}. Available tools: {', '.join(names)}."
            return out
        if arguments is None:
            try:
                arguments = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
            except json.JSONDecodeError as e:
                out["content"] = f"Error: arguments of {name} are not valid JSON: {e.msg}"
                return out
        if not isinstance(arguments, dict):
            out["content"] = f"Error: arguments of {name} must be a JSON object"
            return out
        if self.kind == "mcp":
            step = {"type": "call_tool", "tool_name": name, "arguments": arguments}
        else:
            step = arguments
        try:
            reply = self._send({"type": "step", "data": step})
        except RemoteEnvError as e:
            if e.refused:  # the env refused this action: the model's mistake, shown to it
                out["content"] = f"Error: {e}"
                return out
            raise
        obs = reply.get("observation") or {}
        self._rewards.append(float(reply.get("reward") or 0.0))
        if reply.get("done"):
            self.done = True
        error = obs.get("error")
        if self.kind == "mcp":
            out["content"] = f"Error: {_text(error)}" if error else _text(obs.get("result"))
        else:
            out["content"] = _text({k: v for k, v in obs.items() if k != "metadata"})
        return out

    def finish(self, truncated: bool, info: dict[str, Any]) -> None:
        traj = self.trajectory
        end = self._remote_end
        if end is not None:
            traj.score = float(end.get("score") or 0.0)
            traj.status = end.get("status") or ("truncated" if truncated else "ok")
            traj.metadata["breakdown"] = dict(end.get("breakdown") or {})
            if end.get("verifier_errors"):
                traj.metadata["verifier_errors"] = end["verifier_errors"]
        else:
            traj.score = float(sum(self._rewards))
            traj.status = "truncated" if truncated else "ok"
            traj.metadata["rewards"] = list(self._rewards)
        traj.metadata["turns"] = self.turns
        info.update(score=traj.score, status=traj.status, breakdown=traj.metadata.get("breakdown", {}))

    def close(self) -> None:
        self.done = True
        if self._ws is not None:
            try:
                self._ws.send(json.dumps({"type": "close"}))
            except Exception:
                pass
            self._drop()
