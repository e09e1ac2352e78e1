"""Token-in / token-out chat rendering: the exact token record of a multi-turn trajectory.

A policy never re-tokenizes what it sampled. The trajectory's token record grows by

- the ids the policy sampled, as they came from the engine (mask 1, with their logprobs), and
- the ids of each new env/tool message (mask 0): the chat template's *delta*, rendered against a
  fixed base conversation, so a template that rewrites earlier turns (stripping ``<think>``,
  say) never changes tokens already in the record. When a turn ends with the end-of-turn token,
  the template's turn separator (``\\n`` after ``<|im_end|>`` in ChatML) is added as env tokens;
  when it was cut off by the token budget, the end-of-turn token is added too (mask 0).

Message-only data (teacher demos, imported datasets) goes through the same renderer
(``tokenize_messages``): mask 1 lies exactly on the tokens an assistant would have generated
(content, tool calls, end-of-turn token), never on headers, separators or tool results.

``check_trajectory`` decodes each mask-1 span and compares it with its assistant message; a
trajectory that fails is flagged in ``traj.metadata["token_check"]`` and must not be trained on.

The tokenizer is any Hugging Face tokenizer with a chat template (passed in; nothing heavy is
imported here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agentgym.parsing import parse_tool_calls, strip_tool_calls
from agentgym.types import Message, Trajectory

_BASE: list[Message] = [{"role": "system", "content": "."}, {"role": "user", "content": "."}]
_DUMMY: Message = {"role": "assistant", "content": "."}


class RenderError(ValueError):
    """The chat template does not render the way token-exact rollouts need; says why."""


class ChatRenderer:
    """Renders conversations to token ids and grows trajectories token-exactly.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        tools: the tool schemas shown to the model (OpenAI format), or None.
        chat_template: a template to use instead of the tokenizer's own.
    """

    def __init__(
        self, tokenizer: Any, tools: Sequence[dict[str, Any]] | None = None, chat_template: str | None = None
    ):
        self.tokenizer = tokenizer
        self.tools = list(tools) if tools else None
        self.chat_template = chat_template
        if tokenizer.eos_token_id is None:
            raise RenderError("the tokenizer has no eos_token; set it to the template's end-of-turn token")
        self.end_id: int = int(tokenizer.eos_token_id)
        """the end-of-turn token the template closes every message with (generation stops on it)"""
        self._base_open = self.render(_BASE, add_generation_prompt=True)
        self._base_closed = self.render([*_BASE, _DUMMY])
        if self.end_id not in self._base_closed[len(self._base_open) :]:
            raise RenderError(
                f"the chat template does not close an assistant turn with the eos token "
                f"{tokenizer.eos_token!r}; set tokenizer.eos_token to the end-of-turn token"
            )
        last_end = len(self._base_closed) - 1 - self._base_closed[::-1].index(self.end_id)
        self.separator: list[int] = self._base_closed[last_end + 1 :]
        """tokens the template puts after an end-of-turn token, before the next message"""

    # ----- rendering -----------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[int]:
        """The chat template applied to ``messages`` (with this renderer's tools), as ids."""
        text = self.tokenizer.apply_chat_template(
            list(messages),
            tools=self.tools,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def env_delta(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Tokens of env/tool messages that follow an assistant turn (after its separator),
        ending with the next assistant header when ``add_generation_prompt``."""
        full = self.render([*_BASE, _DUMMY, *messages], add_generation_prompt=add_generation_prompt)
        if full[: len(self._base_closed)] != self._base_closed:
            raise RenderError("the chat template changes earlier turns when messages are appended")
        return full[len(self._base_closed) :]

    def assistant_ids(self, message: Message) -> list[int]:
        """The tokens an assistant would generate for ``message``, end-of-turn token included."""
        full = self.render([*_BASE, message])
        if full[: len(self._base_open)] != self._base_open:
            raise RenderError("the assistant header of the chat template depends on the message")
        body = full[len(self._base_open) :]
        tail = [self.end_id, *self.separator]
        if body[-len(tail) :] != tail:
            raise RenderError("an assistant turn does not end with the end-of-turn token and separator")
        return body[: len(body) - len(self.separator)]

    def tokenize_messages(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """Ids and mask of a whole conversation; mask 1 exactly on assistant-generated tokens.

        The result is the token record a rollout would have produced had the policy sampled
        exactly these assistant messages: it ends on the last message's tokens (no separator
        after a final assistant turn).
        """
        ids: list[int] = []
        mask: list[int] = []
        i = 0
        first = next((k for k, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        if first == len(messages):
            ids = self.render(messages, add_generation_prompt=add_generation_prompt)
            return ids, [0] * len(ids)
        ids = self.render(messages[:first], add_generation_prompt=True)
        mask = [0] * len(ids)
        i = first
        while i < len(messages):
            sampled = self.assistant_ids(messages[i])
            ids += sampled
            mask += [1] * len(sampled)
            j = i + 1
            while j < len(messages) and messages[j].get("role") != "assistant":
                j += 1
            more = j < len(messages)
            if j > i + 1:
                env = self.separator + self.env_delta(messages[i + 1 : j], more or add_generation_prompt)
            elif more or add_generation_prompt:
                env = self.separator + self._gen_header()
            else:
                env = []  # a conversation that ends on an assistant turn ends on its last token
            ids += env
            mask += [0] * len(env)
            i = j
        return ids, mask

    def _gen_header(self) -> list[int]:
        return self._base_open[len(self.render(_BASE)) :]

    # ----- growing a trajectory -----------------------------------------------------------------

    def next_prompt(self, traj: Trajectory) -> list[int]:
        """The ids to generate the next assistant turn from: the record so far plus the tokens of
        the messages the env added since the last assistant turn. Does not modify ``traj``."""
        if traj.tokens is None:
            ids, _ = self.tokenize_messages(traj.messages, add_generation_prompt=True)
            return ids
        last = max((k for k, m in enumerate(traj.messages) if m.get("role") == "assistant"), default=-1)
        new = traj.messages[last + 1 :]
        closing = [] if traj.tokens and traj.tokens[-1] == self.end_id else [self.end_id]
        return [*traj.tokens, *closing, *self.separator, *self.env_delta(new)]

    def append_completion(
        self, traj: Trajectory, prompt: list[int], ids: Sequence[int], logprobs: Sequence[float] | None
    ) -> Message:
        """Set the record to ``prompt`` + the sampled ``ids`` and return the assistant message
        whose content is exactly what those ids decode to."""
        ids = [int(t) for t in ids]
        if logprobs is None:
            logprobs = [0.0] * len(ids)
        if len(logprobs) != len(ids):
            raise ValueError(f"{len(ids)} sampled ids but {len(logprobs)} logprobs")
        if traj.tokens is None:
            _, mask = self.tokenize_messages(traj.messages, add_generation_prompt=True)
            old_mask, old_lp = mask, [0.0] * len(mask)
        else:
            old_mask, old_lp = list(traj.mask or []), list(traj.logprobs or [0.0] * len(traj.tokens))
        added = len(prompt) - len(old_mask)
        traj.tokens = [*prompt, *ids]
        traj.mask = [*old_mask, *[0] * added, *[1] * len(ids)]
        traj.logprobs = [*old_lp, *[0.0] * added, *(float(x) for x in logprobs)]
        return {"role": "assistant", "content": self.decode_turn(ids)}

    def decode_turn(self, ids: Sequence[int]) -> str:
        """The text of one sampled turn: its ids without the closing end-of-turn token."""
        ids = list(ids)
        if ids and ids[-1] == self.end_id:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def check(self, traj: Trajectory) -> bool:
        """Run ``check_trajectory`` and record the outcome in ``traj.metadata["token_check"]``
        (``"ok"`` or the list of problems). Returns True when it passed."""
        problems = check_trajectory(traj, self)
        traj.metadata["token_check"] = problems or "ok"
        return not problems


def mask_spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of 1s.

    >>> mask_spans([0, 1, 1, 0, 1])
    [(1, 3), (4, 5)]
    """
    spans = []
    start = None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _same_calls(text: str, message: Message) -> bool:
    parsed = parse_tool_calls(text, "hermes")
    want = message.get("tool_calls") or []
    if parsed.errors or len(parsed.tool_calls) != len(want):
        return False
    for got, exp in zip(parsed.tool_calls, want, strict=True):
        args = exp["function"]["arguments"]
        exp_args = json.loads(args) if isinstance(args, str) else args
        if (
            got["function"]["name"] != exp["function"]["name"]
            or json.loads(got["function"]["arguments"]) != exp_args
        ):
            return False
    return strip_tool_calls(text) == (message.get("content") or "").strip()


def check_trajectory(traj: Trajectory, renderer: ChatRenderer) -> list[str]:
    """Problems with a trajectory's token record (empty when it is sound).

    Checks that ids, mask and logprobs have one entry per token; that there is one mask-1 span
    per assistant message and each decodes back to that message (its content, or its content and
    tool calls when they are structured); and that sampled logprobs are finite and <= 0.
    """
    if traj.tokens is None:
        return ["no token record"]
    n = len(traj.tokens)
    if traj.mask is None or len(traj.mask) != n:
        return [f"mask has {len(traj.mask or [])} entries for {n} tokens"]
    if traj.logprobs is not None and len(traj.logprobs) != n:
        return [f"logprobs has {len(traj.logprobs)} entries for {n} tokens"]
    problems = []
    spans = mask_spans(traj.mask)
    assistants = [m for m in traj.messages if m.get("role") == "assistant"]
    if len(spans) != len(assistants):
        problems.append(f"{len(spans)} sampled spans but {len(assistants)} assistant messages")
    for k, ((a, b), msg) in enumerate(zip(spans, assistants, strict=False)):
        text = renderer.decode_turn(traj.tokens[a:b])
        ok = _same_calls(text, msg) if msg.get("tool_calls") else text == (msg.get("content") or "")
        if not ok:
            problems.append(
                f"assistant turn {k}: tokens decode to {text[:80]!r}, message says {msg.get('content', '')[:80]!r}"
            )
    if traj.logprobs is not None:
        bad = [
            i
            for i in range(n)
            if traj.mask[i] and not (math.isfinite(traj.logprobs[i]) and traj.logprobs[i] <= 1e-6)
        ]
        if bad:
            problems.append(
                f"{len(bad)} sampled tokens have logprobs that are not finite and <= 0 (first at {bad[0]})"
            )
    return problems
