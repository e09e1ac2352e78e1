"""Serve any registered env in the OpenEnv protocol: ``agentgym env serve ENV_ID --port P``.

Each WebSocket connection to ``/ws`` is a session with an env of its own, made when the client
connects and closed when it leaves. A session takes these messages (``{"type": ..., "data": ...}``):

- ``reset``: ``data`` may hold ``seed``, ``task_id`` and ``episode_id``. The observation holds the
  opening ``messages``, the ``task_id``, the env's ``tool_schemas`` and ``max_turns``.
- ``step``: ``data`` is an action, one of
  ``{"type": "call_tool", "tool_name": NAME, "arguments": {...}}`` (one tool call; the observation
  holds ``tool_name``, ``result`` and ``error`` as OpenEnv's ``CallToolObservation`` does),
  ``{"type": "list_tools"}``,
  ``{"type": "message", "message": {"role": "assistant", ...}}`` or ``{"type": "message",
  "content": TEXT}`` (an assistant turn as a model wrote it: the env parses its tool calls, and a
  reply with none is the final answer), or ``{"action": TEXT}`` (the same, as OpenEnv's MCP
  client sends plain values).
  Every step's observation holds the env's reply ``messages`` and the ``turn``; the step that ends
  the episode carries the score as ``reward`` with ``done: true``, and ``status`` and
  ``breakdown`` in the observation.
- ``state``, ``close``, and ``mcp`` (a JSON-RPC ``tools/list`` or ``tools/call``).

HTTP routes, as an OpenEnv server has them: ``GET /health``, ``/metadata``, ``/schema``,
``/state``, ``POST /reset`` (stateless: a fresh env per request), ``POST /mcp`` (``tools/list``),
and ``GET /tasks?n=&seed=`` (the env's task ids, which a client here uses to pick tasks).

Limits: at most ``max_sessions`` sessions at once (one more is told ``CAPACITY_REACHED``), a
session idle for ``idle_timeout`` seconds is closed, a message over ``max_message_bytes`` is
refused, and a step over ``step_timeout`` seconds ends the episode with an error.
"""

# no `from __future__ import annotations`: FastAPI reads the route functions' annotations
# (WebSocket, Request), which are imported inside app() and must be real classes there
import asyncio
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentgym.env import ToolEnv
from agentgym.registry import make
from agentgym.types import tool_call


@dataclass
class Limits:
    max_sessions: int = 64
    """sessions (envs) alive at once"""
    idle_timeout: float = 300.0
    """seconds without a message before a session is closed"""
    max_message_bytes: int = 4 << 20
    """largest message accepted (WebSocket or HTTP body)"""
    step_timeout: float = 600.0
    """seconds a reset or step may take"""


class WireError(Exception):
    """An error to send back as ``{"type": "error", "data": {"message", "code"}}``."""

    def __init__(self, message: str, code: str = "EXECUTION_ERROR"):
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    id: str
    env: ToolEnv
    created: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    episode_id: str | None = None
    steps: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    """status, score and breakdown of the episode that ended last"""


def openenv_tools(env: ToolEnv) -> list[dict[str, Any]]:
    """The env's tools as OpenEnv / MCP list them: name, description, input schema."""
    out = []
    for schema in env.tool_schemas:
        fn = schema.get("function", schema)
        out.append(
            {
                "name": fn["name"],
                "description": fn.get("description", ""),
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
        )
    return out


ACTION_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "type": {"const": "call_tool"},
                "tool_name": {"type": "string"},
                "arguments": {"type": "object"},
            },
            "required": ["type", "tool_name"],
        },
        {"type": "object", "properties": {"type": {"const": "list_tools"}}, "required": ["type"]},
        {
            "type": "object",
            "properties": {
                "type": {"const": "message"},
                "message": {"type": "object", "description": "an assistant message"},
                "content": {"type": "string", "description": "the text of an assistant message"},
            },
            "required": ["type"],
        },
        {"type": "object", "properties": {"action": {"type": "string"}}, "required": ["action"]},
    ]
}


class EnvServer:
    """The sessions of one env id and the routes that reach them (``app()``)."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None, limits: Limits | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.limits = limits or Limits()
        if self.limits.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {self.limits.max_sessions}")
        self.sessions: dict[str, Session] = {}
        self._reserved = 0
        self._call_ids = itertools.count()
        self._sockets: dict[str, Any] = {}
        # one env made up front: a bad id or bad kwargs fail here, before anything is served
        probe = make(env_id, **self.env_kwargs)
        try:
            self.tools = openenv_tools(probe)
            self.tool_schemas = probe.tool_schemas
            self.description = (type(probe).__doc__ or "").strip().split("\n\n")[0]
            self.probe_task_ids = probe.task_ids
        finally:
            probe.close()

    # ----- sessions ----------------------------------------------------------------------------

    async def open_session(self) -> "Session":
        if len(self.sessions) + self._reserved >= self.limits.max_sessions:
            raise WireError(
                f"the server holds its maximum of {self.limits.max_sessions} sessions; retry later, or "
                "start it with a larger --max-sessions",
                "CAPACITY_REACHED",
            )
        self._reserved += 1
        try:
            env = await asyncio.to_thread(make, self.env_id, **self.env_kwargs)
        except Exception as e:
            raise WireError(
                f"could not make {self.env_id!r}: {type(e).__name__}: {e}", "FACTORY_ERROR"
            ) from e
        finally:
            self._reserved -= 1
        session = Session(id=uuid.uuid4().hex, env=env)
        self.sessions[session.id] = session
        return session

    async def close_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        try:
            await asyncio.wait_for(session.env.aclose(), timeout=30)
        except Exception:
            pass

    def idle_sessions(self) -> list[Session]:
        now = time.monotonic()
        return [s for s in self.sessions.values() if now - s.last_active > self.limits.idle_timeout]

    # ----- messages ----------------------------------------------------------------------------

    async def handle(self, session: Session, message: Any) -> dict[str, Any]:
        """The reply to one client message (never raises for the client's mistakes)."""
        session.last_active = time.monotonic()
        try:
            if not isinstance(message, dict):
                raise WireError("a message is a JSON object with a 'type'", "VALIDATION_ERROR")
            kind = message.get("type")
            data = message.get("data") if message.get("data") is not None else {}
            if kind == "reset":
                return {"type": "observation", "data": await self.reset(session, data)}
            if kind == "step":
                return {"type": "observation", "data": await self.step(session, data)}
            if kind == "state":
                return {"type": "state", "data": self.state(session)}
            if kind == "mcp":
                return {"type": "mcp", "data": await self.mcp(session, data)}
            raise WireError(
                f"unknown message type {kind!r}: send reset, step, state, mcp or close", "UNKNOWN_TYPE"
            )
        except WireError as e:
            return {"type": "error", "data": {"message": str(e), "code": e.code}}
        except Exception as e:
            return {
                "type": "error",
                "data": {"message": f"{type(e).__name__}: {e}", "code": "EXECUTION_ERROR"},
            }
        finally:
            session.last_active = time.monotonic()

    async def _timed(self, session: Session, coro, what: str):
        try:
            return await asyncio.wait_for(coro, timeout=self.limits.step_timeout)
        except TimeoutError:
            session.env.done = True
            raise WireError(
                f"{what} took longer than {self.limits.step_timeout:g} s (the server's --step-timeout); "
                "the episode is over, send reset",
                "EXECUTION_ERROR",
            ) from None

    async def reset(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise WireError("reset data is an object: {seed, task_id, episode_id}", "VALIDATION_ERROR")
        seed = data.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise WireError(f"seed must be an integer, got {seed!r}", "VALIDATION_ERROR")
        options = {"task_id": str(data["task_id"])} if data.get("task_id") is not None else None
        env = session.env
        try:
            obs, info = await self._timed(session, env.areset(seed=seed, options=options), "reset")
        except (ValueError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise WireError(f"reset failed: {msg}", "VALIDATION_ERROR") from e
        session.episode_id = str(data.get("episode_id") or uuid.uuid4().hex)
        session.steps = 0
        session.last = {}
        return {
            "observation": {
                "messages": obs,
                "task_id": info.get("task_id", ""),
                "tool_schemas": env.tool_schemas,
                "max_turns": env.max_turns,
                "env": env.env_id,
                "episode_id": session.episode_id,
            },
            "reward": None,
            "done": False,
        }

    async def step(self, session: Session, action: Any) -> dict[str, Any]:
        env = session.env
        if not isinstance(action, dict):
            raise WireError(
                "a step's data is an action object: {type: call_tool, tool_name, arguments}, "
                "{type: list_tools} or {type: message, content}",
                "VALIDATION_ERROR",
            )
        kind = action.get("type")
        if kind == "list_tools":
            # tool_schemas: the exact schemas the env shows a model, for clients of this project
            obs = {"tools": self.tools, "tool_schemas": self.tool_schemas}
            return {"observation": obs, "reward": None, "done": env.done}
        if session.episode_id is None or env.done:
            raise WireError("no episode is running: send reset first", "SESSION_ERROR")
        extra: dict[str, Any] = {}
        if kind == "call_tool":
            name = action.get("tool_name")
            arguments = action.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise WireError(
                    "call_tool needs tool_name (a string) and arguments (an object)", "VALIDATION_ERROR"
                )
            call = tool_call(name, arguments, f"call_{next(self._call_ids)}")
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
            extra = {"tool_name": name, "error": None}
            if name not in {t["name"] for t in self.tools}:
                extra["error"] = {"error_type": "tool_not_found", "message": f"unknown tool {name!r}"}
        elif kind == "message" or (kind is None and "action" in action):
            message = action.get("message")
            if message is None:
                content = action.get("content", action.get("action"))
                if not isinstance(content, str):
                    raise WireError(
                        "a message action needs content (a string) or message", "VALIDATION_ERROR"
                    )
                message = {"role": "assistant", "content": content}
            if not isinstance(message, dict):
                raise WireError("message must be an object with role and content", "VALIDATION_ERROR")
            message = {**message, "role": "assistant"}
        else:
            raise WireError(
                f"unknown action type {kind!r}: use call_tool, list_tools or message", "VALIDATION_ERROR"
            )
        replies, reward, terminated, truncated, info = await self._timed(session, env.astep(message), "step")
        session.steps += 1
        obs: dict[str, Any] = {"messages": replies, "turn": info.get("turn", session.steps), **extra}
        if "tool_name" in extra:
            obs["result"] = replies[0].get("content") if replies else None
        done = terminated or truncated
        if done:
            traj = env.trajectory
            session.last = {
                "status": traj.status,
                "score": traj.score,
                "breakdown": info.get("breakdown", {}),
            }
            if traj.metadata.get("verifier_errors"):
                session.last["verifier_errors"] = traj.metadata["verifier_errors"]
            obs.update(session.last)
        return {"observation": obs, "reward": float(reward), "done": done}

    def state(self, session: Session) -> dict[str, Any]:
        env = session.env
        return {
            "episode_id": session.episode_id,
            "step_count": session.steps,
            "task_id": env.task.task_id if env.task is not None else None,
            "done": env.done,
            "env": self.env_id,
            **session.last,
        }

    async def mcp(self, session: Session | None, request: Any) -> dict[str, Any]:
        """A JSON-RPC 2.0 reply to ``tools/list`` or ``tools/call``."""
        rid = request.get("id") if isinstance(request, dict) else None

        def error(code: int, message: str) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}

        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or "method" not in request:
            return error(-32600, "not a JSON-RPC 2.0 request")
        method, params = request["method"], request.get("params") or {}
        if method == "tools/list":
            tools = [
                {"name": t["name"], "description": t["description"], "inputSchema": t["input_schema"]}
                for t in self.tools
            ]
            return {"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}}
        if method == "tools/call":
            if session is None:
                return error(-32000, "tools/call needs a session: connect to /ws, reset, then call")
            try:
                out = await self.step(
                    session,
                    {
                        "type": "call_tool",
                        "tool_name": params.get("name"),
                        "arguments": params.get("arguments"),
                    },
                )
            except WireError as e:
                return error(-32602 if e.code == "VALIDATION_ERROR" else -32000, str(e))
            obs = out["observation"]
            text = obs.get("result") or ""
            result = {
                "content": [{"type": "text", "text": text}],
                "isError": obs.get("error") is not None or text.startswith("Error"),
            }
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        return error(-32601, f"method {method!r} not found (tools/list, tools/call)")

    # ----- routes ------------------------------------------------------------------------------

    def app(self):
        from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
        from fastapi.responses import JSONResponse

        server = self

        @contextlib.asynccontextmanager
        async def lifespan(app):
            reaper = asyncio.create_task(server._reap())
            try:
                yield
            finally:
                reaper.cancel()
                for session in list(server.sessions.values()):
                    await server.close_session(session)

        app = FastAPI(title=f"agentgym env {self.env_id}", description=self.description, lifespan=lifespan)

        @app.middleware("http")
        async def bound_body(request: Request, call_next):
            size = request.headers.get("content-length")
            if size is not None and size.isdigit() and int(size) > server.limits.max_message_bytes:
                return JSONResponse(
                    {
                        "detail": f"body of {size} bytes is over the limit of {server.limits.max_message_bytes}"
                    },
                    status_code=413,
                )
            return await call_next(request)

        @app.get("/health")
        async def health():
            return {"status": "healthy"}

        @app.get("/metadata")
        async def metadata():
            return {"name": server.env_id, "description": server.description, "version": None}

        @app.get("/schema")
        async def schema():
            return {
                "action": ACTION_SCHEMA,
                "observation": {"type": "object", "properties": {"messages": {"type": "array"}}},
                "state": {
                    "type": "object",
                    "properties": {"episode_id": {}, "step_count": {"type": "integer"}},
                },
            }

        @app.get("/state")
        async def state():
            return {"episode_id": None, "step_count": 0}

        @app.get("/tasks")
        async def tasks(n: int = 10, seed: int = 0):
            if not 1 <= n <= 100_000:
                return JSONResponse({"detail": "n must be between 1 and 100000"}, status_code=422)
            return {"task_ids": await asyncio.to_thread(server.probe_task_ids, n, seed)}

        @app.post("/reset")
        async def reset(request: Request):
            body = await _json_body(request)
            try:
                session = await server.open_session()
            except WireError as e:
                return JSONResponse({"detail": str(e), "code": e.code}, status_code=503)
            try:
                return await server.reset(session, body or {})
            except WireError as e:
                return JSONResponse({"detail": str(e), "code": e.code}, status_code=422)
            finally:
                await server.close_session(session)

        @app.post("/step")
        async def step():
            return JSONResponse(
                {
                    "detail": "HTTP /step has no session to step (each HTTP request gets a fresh env); "
                    "play episodes over the WebSocket at /ws"
                },
                status_code=409,
            )

        @app.post("/mcp")
        async def mcp(request: Request):
            return await server.mcp(None, await _json_body(request))

        @app.websocket("/ws")
        async def ws(websocket: WebSocket):
            await websocket.accept()
            try:
                session = await server.open_session()
            except WireError as e:
                await websocket.send_text(
                    json.dumps({"type": "error", "data": {"message": str(e), "code": e.code}})
                )
                await websocket.close(code=1013)  # try again later
                return
            websocket.state.session = session
            server._sockets[session.id] = websocket
            try:
                while True:
                    raw = await websocket.receive_text()
                    if len(raw.encode()) > server.limits.max_message_bytes:
                        reply = {
                            "type": "error",
                            "data": {
                                "message": f"message over the limit of {server.limits.max_message_bytes} bytes",
                                "code": "VALIDATION_ERROR",
                            },
                        }
                    else:
                        try:
                            message = json.loads(raw)
                        except json.JSONDecodeError as e:
                            reply = {
                                "type": "error",
                                "data": {"message": f"Invalid JSON: {e}", "code": "INVALID_JSON"},
                            }
                        else:
                            if isinstance(message, dict) and message.get("type") == "close":
                                break
                            reply = await server.handle(session, message)
                    await websocket.send_text(json.dumps(reply, default=str))
            except WebSocketDisconnect:
                pass
            finally:
                server._sockets.pop(session.id, None)
                await server.close_session(session)
                try:
                    await websocket.close()
                except (RuntimeError, WebSocketDisconnect):  # the client already left
                    pass

        return app

    async def _reap(self) -> None:
        """Close sessions idle for longer than ``idle_timeout``."""
        period = max(0.05, min(self.limits.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(period)
            for session in self.idle_sessions():
                websocket = self._sockets.pop(session.id, None)
                await self.close_session(session)
                if websocket is not None:
                    try:
                        await websocket.send_text(
                            json.dumps(
                                {
                                    "type": "error",
                                    "data": {
                                        "message": f"session closed after {self.limits.idle_timeout:g} s idle",
                                        "code": "SESSION_ERROR",
                                    },
                                }
                            )
                        )
                        await websocket.close(code=1001)
                    except Exception:
                        pass


async def _json_body(request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def serve(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``env_id`` until interrupted."""
    import uvicorn

    server = EnvServer(env_id, env_kwargs, limits)
    config = uvicorn.Config(
        server.app(),
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=server.limits.max_message_bytes,
        ws_ping_interval=20,
        ws_ping_timeout=60,
    )
    uvicorn.Server(config).run()


class ServerProcess:
    """``agentgym env serve`` in a subprocess on a free local port, ready when made: ``url``
    (http://), ``ws`` (ws://), ``stop()``; a context manager. For tests, benchmarks and
    notebooks that need a server beside them."""

    def __init__(
        self, env_id: str, *flags: str, env_kwargs: dict[str, Any] | None = None, timeout: float = 120.0
    ):
        import socket
        import subprocess
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "agentgym", "env", "serve", env_id, "--port", str(self.port), *flags]
        if env_kwargs:
            argv += ["--env-kwargs", *(f"{k}={json.dumps(v)}" for k, v in env_kwargs.items())]
        # stderr to a file, never a pipe nobody reads: a full pipe would stall the server
        import tempfile

        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the server runs
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"agentgym env serve exited with {self.proc.returncode}: {err}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "healthy":
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"agentgym env serve did not answer at {self.url} within {timeout:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
