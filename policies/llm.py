"""``LLMPolicy``: the core ``Policy`` protocol over any token-level ``Generator``.

Every model backend (hf, vllm, openai) is a ``Generator``; this class turns one into a policy
that grows each trajectory token-exactly through ``agentgym.chat.ChatRenderer``. Many episodes
may call ``act`` at once; the generators batch concurrent requests.

Spec keywords shared by all backends (``vllm:PATH,temperature=0,max_tokens=64``):
``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop`` (several joined with ``|``),
``chat_template`` (a path to a Jinja file that replaces the tokenizer's template).

``seed`` makes a run reproducible without making its samples alike: each turn is sampled with a
seed drawn from it, the episode's seed (``traj.metadata["seed"]``, different for every task and
sample of a group) and the turn number. One seed for every request would give the G samples of
a group the same ids on every backend, and GRPO nothing to compare.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from agentgym.chat import ChatRenderer
from agentgym.policy import Generator, PolicySpec, SamplingParams
from agentgym.types import Message, Trajectory

SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed", "stop")


def sampling_from_spec(spec: PolicySpec, default: SamplingParams | None = None) -> SamplingParams:
    """The sampling settings named in a spec, over ``default``.

    >>> from agentgym.policy import parse_spec
    >>> sampling_from_spec(parse_spec("vllm:m,temperature=0,max_tokens=8,stop=a|b"))
    SamplingParams(temperature=0.0, top_p=1.0, max_tokens=8, stop=['a', 'b'], seed=None, logprobs=True)
    """
    s = default or SamplingParams()
    stop = spec.kwargs.get("stop")
    return SamplingParams(
        temperature=spec.get("temperature", s.temperature, float),
        top_p=spec.get("top_p", s.top_p, float),
        max_tokens=spec.get("max_tokens", s.max_tokens, int),
        stop=[x for x in stop.split("|") if x] if stop else list(s.stop),
        seed=spec.get("seed", s.seed, int),
        logprobs=s.logprobs,
    )


def check_spec_keys(spec: PolicySpec, allowed: tuple[str, ...]) -> None:
    """Raise on a spec keyword the backend would otherwise silently ignore."""
    unknown = sorted(set(spec.kwargs) - set(SAMPLING_KEYS) - {"chat_template"} - set(allowed))
    if unknown:
        known = ", ".join((*SAMPLING_KEYS, "chat_template", *allowed))
        raise ValueError(f"policy {spec}: unknown option(s) {', '.join(unknown)}; known: {known}")


def load_tokenizer(path: str, chat_template: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if chat_template:
        tok.chat_template = Path(chat_template).read_text()
    return tok


class LLMPolicy:
    """A policy that samples each assistant turn from a ``Generator``.

    Args:
        generator: the token-level backend.
        tokenizer: the model's Hugging Face tokenizer (its chat template renders the messages).
        sampling: sampling settings for every turn.
        max_model_len: context length; a turn's ``max_tokens`` is cut to what still fits.
        chat_template: a Jinja template to render with instead of the tokenizer's own.
    """

    def __init__(
        self,
        generator: Generator,
        tokenizer: Any,
        sampling: SamplingParams | None = None,
        max_model_len: int | None = None,
        chat_template: str | None = None,
    ):
        self.generator = generator
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingParams()
        self.max_model_len = max_model_len
        self.chat_template = chat_template
        self._renderers: dict[str, ChatRenderer] = {}

    def renderer(self, tools: list[dict[str, Any]] | None) -> ChatRenderer:
        """The renderer for this set of tools (built once per distinct set)."""
        key = json.dumps(tools or [], sort_keys=True)
        if key not in self._renderers:
            self._renderers[key] = ChatRenderer(self.tokenizer, tools, chat_template=self.chat_template)
        return self._renderers[key]

    async def act(self, traj: Trajectory, env: Any) -> Message:
        r = self.renderer(getattr(env, "tool_schemas", None))
        if traj.tokens is not None:
            r.check(traj)
        prompt = r.next_prompt(traj)
        sampling = self.sampling
        if self.max_model_len is not None:
            room = self.max_model_len - len(prompt)
            if room < 1:
                raise ValueError(
                    f"the conversation ({len(prompt)} tokens) fills the context ({self.max_model_len}); "
                    "give the model a longer max_model_len, or the env fewer max_turns"
                )
            if room < sampling.max_tokens:
                sampling = SamplingParams(**{**vars(sampling), "max_tokens": room})
        if sampling.seed is not None:
            turn = sum(m.get("role") == "assistant" for m in traj.messages)
            key = f"{sampling.seed}:{traj.metadata.get('seed')}:{turn}"
            sampling = SamplingParams(**{**vars(sampling), "seed": zlib.crc32(key.encode())})
        [completion] = await self.generator.generate([prompt], sampling)
        message = r.append_completion(traj, prompt, completion.ids, completion.logprobs)
        if completion.finish_reason == "length":
            traj.metadata["cut_turns"] = traj.metadata.get("cut_turns", 0) + 1
        return message

    def finish(self, traj: Trajectory, env: Any = None) -> bool:
        """Check a finished trajectory's token record; the outcome goes in
        ``traj.metadata["token_check"]``. Returns True when it passed."""
        if traj.tokens is None:
            return False
        return self.renderer(getattr(env, "tool_schemas", None)).check(traj)

    def close(self) -> None:
        """Release the generator: its thread, engine or connections. The runner calls this for
        a policy it built from a spec string once the run is over."""
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()

    def update_weights(self, weights: Any, timeout: float = 300.0) -> None:
        """Push new weights to the generator (a state dict or ``(name, tensor)`` pairs); raises
        when the push fails or takes longer than ``timeout`` seconds."""
        push = getattr(self.generator, "update_weights", None)
        if push is None:
            raise TypeError(f"{type(self.generator).__name__} cannot take new weights")
        push(weights, timeout=timeout)
