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

Tool support is probed once, when a renderer is built: it renders a made-up tool call, two
calls in one message, a call with text beside it and a tool result, and looks for each in what
the template wrote. A template that loses one of them (SmolLM2's own template renders a turn that called a
tool as ``<|im_start|>assistant\n<|im_end|>``) would train on records that silently miss what the
assistant did, so it is refused with a ``RenderError`` that says what was lost: at once when the
renderer has tools (the model is meant to call them), else as soon as a message needs what the
template drops. Give such a model a template with tool support (``chat_template=``).

The call format (``tool_format``, one of ``agentgym.parsing.FORMATS``) is how the template writes
tool calls, so how a sampled turn's calls are read back by ``check_trajectory``. By default
(``"auto"``) it is detected from the probe: the first of ``hermes``, ``mistral``,
``llama3_json`` and ``json`` whose parser reads the made-up call back exactly. Name it to insist
on one; a template that writes calls no parser reads is refused.

The tokenizer is any Hugging Face tokenizer with a chat template (passed in; nothing heavy is
imported here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agentgym.parsing import FORMATS, Format, parse_tool_calls, strip_tool_calls
from agentgym.types import Message, Trajectory, tool_call

_BASE: list[Message] = [{"role": "system", "content": "."}, {"role": "user", "content": "."}]
_DUMMY: Message = {"role": "assistant", "content": "."}

# The made-up tool traffic the template is probed with: words no template writes by itself.
_PROBE_CALL = tool_call("probe_lookup", {"probe_key": "probe value 7"})
_PROBE_OTHER = tool_call("probe_other", {"probe_flag": True}, call_id="call_1")
_PROBE_TEXT = "Probe text 5."
_PROBE_RESULT = "probe result 9"
_DETECTED: tuple[Format, ...] = ("hermes", "mistral", "llama3_json", "json")
_FIX = (
    "give the model a chat template with tool support: save it as chat_template.jinja in the model "
    "directory, or pass it as chat_template= (to ChatRenderer, or chat_template=PATH in a policy spec)"
)


class RenderError(ValueError):
    """The chat template does not render the way token-exact rollouts need; says why."""


class ChatRenderer:
    """Renders conversations to token ids and grows trajectories token-exactly.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        tools: the tool schemas shown to the model (OpenAI format), or None.
        chat_template: a template to use instead of the tokenizer's own.
        tool_format: how the template writes tool calls (``agentgym.parsing.FORMATS``);
            ``"auto"`` detects it from the template.

    Raises:
        RenderError: the template cannot give token-exact records, or it loses tool calls, tool
            results or the tool schemas while ``tools`` are given; the message says which.
    """

    def __init__(
        self,
        tokenizer: Any,
        tools: Sequence[dict[str, Any]] | None = None,
        chat_template: str | None = None,
        tool_format: Format = "auto",
    ):
        if tool_format not in FORMATS:
            raise ValueError(f"tool_format must be one of {', '.join(FORMATS)}, got {tool_format!r}")
        self.tokenizer = tokenizer
        self.tools = list(tools) if tools else None
        self.chat_template = chat_template
        if tokenizer.eos_token_id is None:
            raise RenderError("the tokenizer has no eos_token; set it to the template's end-of-turn token")
        self.end_id: int = int(tokenizer.eos_token_id)
        """the end-of-turn token the template closes every message with (generation stops on it)"""
        self._base_open = self.render(_BASE, add_generation_prompt=True)
        self._base_closed = self.render([*_BASE, _DUMMY])
        self._header = self._base_open[len(self.render(_BASE)) :]
        if self.end_id not in self._base_closed[len(self._base_open) :]:
            raise RenderError(
                f"the chat template does not close an assistant turn with the eos token "
                f"{tokenizer.eos_token!r}; set tokenizer.eos_token to the end-of-turn token"
            )
        last_end = len(self._base_closed) - 1 - self._base_closed[::-1].index(self.end_id)
        self.separator: list[int] = self._base_closed[last_end + 1 :]
        """tokens the template puts after an end-of-turn token, before the next message"""
        self.tool_format: Format = tool_format
        """how the template writes tool calls (detected when built with ``"auto"``)"""
        self.lost: dict[str, str] = self._probe()
        """what the template loses (``tool_calls``, ``several_calls``, ``content_with_calls``,
        ``tool_results``, ``tool_schemas``), each with the reason; empty for full tool support"""
        fatal = [self.lost[k] for k in ("tool_schemas", "tool_calls", "tool_results") if k in self.lost]
        if self.tools and fatal:
            raise RenderError(f"{'; '.join(fatal)}: {_FIX}")

    # ----- probing the template's tool support ---------------------------------------------------

    def _turn(self, message: Message, after: Sequence[Message] = ()) -> tuple[str, str]:
        """How the template renders ``message`` as an assistant turn: the text the assistant
        writes (up to its end-of-turn token) and the whole turn with its header, or with the
        messages ``after`` it when there are any."""
        ids = self.render([*_BASE, message, *after])
        whole = self._text(ids[len(self._base_open) - len(self._gen_header()) :])
        body = ids[len(self._base_open) :] if ids[: len(self._base_open)] == self._base_open else ids
        if self.end_id in body:
            body = body[: body.index(self.end_id)]
        return self._text(body), whole

    def _probe(self) -> dict[str, str]:
        lost: dict[str, str] = {}
        text, whole = self._turn({"role": "assistant", "content": _PROBE_TEXT})
        if _PROBE_TEXT not in text:
            raise RenderError(
                f"the chat template drops an assistant message's text (it renders as {whole!r})"
            )
        if self.tools:
            names = [t["function"]["name"] for t in self.tools]
            shown = self._text(self._base_open)
            if any(name not in shown for name in names):
                missing = ", ".join(n for n in names if n not in shown)
                lost["tool_schemas"] = (
                    f"the chat template does not show the tools to the model ({missing} missing)"
                )
        one: Message = {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]}
        try:
            text, whole = self._turn(one)
        except Exception as e:  # a template may raise anything on a message it does not expect
            lost["tool_calls"] = f"the chat template fails on an assistant message with a tool call ({e})"
            return lost
        name, args = _PROBE_CALL["function"]["name"], json.loads(_PROBE_CALL["function"]["arguments"])
        if name not in text or any(str(v) not in text for v in args.values()):
            lost["tool_calls"] = (
                f"the chat template drops the tool calls of an assistant message (one renders as {whole!r})"
            )
            return lost
        formats = _DETECTED if self.tool_format == "auto" else (self.tool_format,)
        found = next((f for f in formats if _same_calls(text, one, f)), None)
        if found is None:
            if self.tool_format == "auto":
                which, hint = "no parser", f"calls must be written in one of {', '.join(_DETECTED)}"
            else:
                which, hint = f"the {self.tool_format!r} parser", "leave tool_format='auto' to detect it"
            lost["tool_calls"] = (
                f"the chat template writes tool calls that {which} reads back ({text!r}); {hint}"
            )
            return lost
        self.tool_format = found
        for key, message, what in (
            ("several_calls", {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL, _PROBE_OTHER]},
             "more than one tool call"),
            ("content_with_calls", {"role": "assistant", "content": _PROBE_TEXT, "tool_calls": [_PROBE_CALL]},
             "text beside its tool call"),
        ):  # fmt: skip
            try:
                text, whole = self._turn(message)
            except Exception as e:
                lost[key] = f"the chat template fails on an assistant message with {what} ({e})"
                continue
            if not _same_calls(text, message, found):
                lost[key] = (
                    f"the chat template loses part of an assistant message with {what} (it renders as {whole!r})"
                )
        result: Message = {"role": "tool", "tool_call_id": "call_0", "name": name, "content": _PROBE_RESULT}
        try:
            _, whole = self._turn(one, [result])
        except Exception as e:
            whole = f"an error: {e}"
        if _PROBE_RESULT not in whole:
            lost["tool_results"] = (
                f"the chat template drops tool results (a call and its result render as {whole!r})"
            )
        return lost

    def _refuse(self, message: Message) -> None:
        """Raise when the template loses part of ``message`` (a message it was probed to drop)."""
        if message.get("role") in ("tool", "ipython"):
            key = "tool_results"
        elif not message.get("tool_calls"):
            return
        elif "tool_calls" in self.lost:
            key = "tool_calls"
        elif len(message["tool_calls"]) > 1 and "several_calls" in self.lost:
            key = "several_calls"
        elif (message.get("content") or "").strip() and "content_with_calls" in self.lost:
            key = "content_with_calls"
        else:
            return
        if key in self.lost:
            raise RenderError(f"{self.lost[key]}; a record of this message would not hold it: {_FIX}")

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
        if self.lost:
            for m in messages:
                self._refuse(m)
        full = self.render([*_BASE, _DUMMY, *messages], add_generation_prompt=add_generation_prompt)
        return self._after(self._base_closed, full, "when messages are appended")

    def assistant_ids(self, message: Message) -> list[int]:
        """The tokens an assistant would generate for ``message``, end-of-turn token included."""
        if self.lost:
            self._refuse(message)
        body = self._after(self._base_open, self.render([*_BASE, message]), "after the assistant header")
        tail = [self.end_id, *self.separator]
        if body[-len(tail) :] != tail:
            raise RenderError("an assistant turn does not end with the end-of-turn token and separator")
        return body[: len(body) - len(self.separator)]

    def _after(self, head: list[int], full: list[int], where: str) -> list[int]:
        """The tokens of ``full`` after ``head``, its first part. When the template keeps the text
        of ``head`` but its last tokens merge with what follows (a header that ends in a newline
        before a message that starts with one, say), the rest is tokenized on its own: the
        tokens a rollout would have had, since it never re-tokenizes its prompt."""
        if full[: len(head)] == head:
            return full[len(head) :]
        text, before = self._text(full), self._text(head)
        if not text.startswith(before):
            at = next((i for i, (a, b) in enumerate(zip(text, before, strict=False)) if a != b), len(text))
            raise RenderError(
                f"the chat template changes earlier turns {where}: {before[max(0, at - 30) : at + 30]!r} "
                f"becomes {text[max(0, at - 30) : at + 30]!r} (a template that moves the tools or "
                "the system prompt to the last user message cannot grow a record token-exactly)"
            )
        rest = list(self.tokenizer.encode(text[len(before) :], add_special_tokens=False))
        if self._text([*head, *rest]) != text:
            raise RenderError(
                f"tokens merge across the turn boundary {where} and the rest does not tokenize on "
                f"its own: {text[len(before) - 10 : len(before) + 20]!r}"
            )
        return rest

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

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
        return self._header

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


def _same_calls(text: str, message: Message, fmt: Format = "hermes") -> bool:
    """Whether ``text`` holds exactly ``message``'s tool calls (in format ``fmt``) and its text."""
    parsed = parse_tool_calls(text, fmt)
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
    return strip_tool_calls(text, fmt) == (message.get("content") or "").strip()


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
        ok = (
            _same_calls(text, msg, renderer.tool_format)
            if msg.get("tool_calls")
            else text == (msg.get("content") or "")
        )
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
