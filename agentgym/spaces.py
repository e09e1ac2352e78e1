"""Gymnasium spaces for chat: an assistant message (the action) and a list of messages (the
observation), so ``gymnasium.utils.env_checker.check_env`` works on every ``ToolEnv``."""

from __future__ import annotations

import json
import string
from typing import Any

import numpy as np
from gymnasium import spaces

_ROLES = ("system", "user", "assistant", "tool")
_ALPHABET = string.ascii_letters + string.digits + " .,:;!?()[]{}<>/\"'=+-*_\n"


def _is_message(m: Any) -> bool:
    if not isinstance(m, dict) or m.get("role") not in _ROLES:
        return False
    content = m.get("content", "")
    if content is not None and not isinstance(content, str):
        return False
    calls = m.get("tool_calls")
    return calls is None or isinstance(calls, list)


class MessageSpace(spaces.Space[dict]):
    """One chat message. ``sample()`` gives an assistant message: random text, or a call of one of
    ``tools`` (OpenAI tool schemas) with random arguments, to exercise error handling."""

    def __init__(self, tools: list[dict[str, Any]] | None = None, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self.tools = tools or []

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def _random_text(self, n: int) -> str:
        idx = self.np_random.integers(0, len(_ALPHABET), size=n)
        return "".join(_ALPHABET[i] for i in idx)

    def _random_value(self, schema: dict[str, Any]) -> Any:
        if "enum" in schema:
            return schema["enum"][int(self.np_random.integers(len(schema["enum"])))]
        kind = schema.get("type")
        if kind == "integer":
            return int(self.np_random.integers(-10, 10))
        if kind == "number":
            return float(np.round(self.np_random.normal() * 10, 3))
        if kind == "boolean":
            return bool(self.np_random.integers(2))
        return self._random_text(int(self.np_random.integers(0, 12)))

    def sample(self, mask: Any = None, probability: Any = None) -> dict:
        if self.tools and self.np_random.random() < 0.7:
            fn = self.tools[int(self.np_random.integers(len(self.tools)))]["function"]
            props = fn.get("parameters", {}).get("properties", {})
            args = {k: self._random_value(v) for k, v in props.items()}
            body = json.dumps({"name": fn["name"], "arguments": args})
            return {"role": "assistant", "content": f"<tool_call>\n{body}\n</tool_call>"}
        return {"role": "assistant", "content": self._random_text(int(self.np_random.integers(1, 40)))}

    def contains(self, x: Any) -> bool:
        return _is_message(x)

    def __repr__(self) -> str:
        return f"MessageSpace(tools={[t['function']['name'] for t in self.tools]})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, MessageSpace) and other.tools == self.tools


class ConversationSpace(spaces.Space[list]):
    """A list of chat messages (what an env returns after reset or a step)."""

    def __init__(self, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> list:
        n = int(self.np_random.integers(1, 3))
        return [
            {"role": "user", "content": f"message {int(self.np_random.integers(1000))}"} for _ in range(n)
        ]

    def contains(self, x: Any) -> bool:
        return isinstance(x, list) and all(_is_message(m) for m in x)

    def __repr__(self) -> str:
        return "ConversationSpace()"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ConversationSpace)
