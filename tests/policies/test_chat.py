"""Token-exact rendering: deltas, masks, the check, and templates that rewrite earlier turns."""

from __future__ import annotations

import asyncio

import pytest
from agentgym.envs.toy import CalculatorEnv
from agentgym.policies.llm import LLMPolicy

from agentgym.chat import ChatRenderer, check_trajectory, mask_spans
from agentgym.policy import Completion, SamplingParams
from agentgym.testing import need
from agentgym.types import Trajectory, tool_call

# A ChatML template whose assistant turns before the last message lose their <think> block, as
# Qwen3's template does to earlier turns (tools named in the system turn, Hermes calls).
THINK_STRIPPING = """\
{%- for m in messages %}
{%- if m.role == 'assistant' %}
{%- set content = m.content or '' %}
{%- if not loop.last and '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}\
<|im_start|>assistant
{{ content }}{% for tc in m.tool_calls or [] %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content or '' }}{% if m.role == 'system' and tools %} Tools: {{ tools | map(attribute='function.name') | join(', ') }}{% endif %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def tok():
    need(module="transformers", install="pip install 'agentgym[train]'")
    from agentgym.policies.tiny import build_tokenizer

    return build_tokenizer()


def conversation():
    env = CalculatorEnv(difficulty=1)
    obs, _ = env.reset(seed=0, options={"task_id": "calc-4"})
    call = tool_call("calculator", {"expression": "9 * 8"})
    return obs + [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "72"},
        {"role": "assistant", "content": "72"},
    ], env.tool_schemas


def test_message_only_data_matches_the_template_and_masks_only_assistant_tokens(tok):
    messages, tools = conversation()
    r = ChatRenderer(tok, tools)
    ids, mask = r.tokenize_messages(messages)
    # a prefix-preserving template: the tokens of one render (which adds a final separator)
    assert ids + r.separator == r.render(messages)
    spans = mask_spans(mask)
    assert [tok.decode(ids[a:b]) for a, b in spans] == [
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "9 * 8"}}\n</tool_call><|im_end|>',
        "72<|im_end|>",
    ]
    # headers, separators and the tool result are env tokens
    assert (
        tok.decode(ids[spans[0][1] : spans[1][0]])
        == "\n<|im_start|>tool\n72<|im_end|>\n<|im_start|>assistant\n"
    )
    traj = Trajectory(messages=messages, tokens=ids, mask=mask, logprobs=[0.0] * len(ids))
    assert check_trajectory(traj, r) == []


def test_check_flags_a_record_that_does_not_match_its_messages(tok):
    messages, tools = conversation()
    r = ChatRenderer(tok, tools)
    ids, mask = r.tokenize_messages(messages)
    traj = Trajectory(messages=messages, tokens=ids, mask=mask, logprobs=[0.0] * len(ids))
    traj.messages[-1] = {"role": "assistant", "content": "73"}
    assert not r.check(traj)
    assert "assistant turn 1" in traj.metadata["token_check"][0]
    traj.messages.pop()
    assert "2 sampled spans but 1 assistant messages" in check_trajectory(traj, r)[0]
    traj.logprobs = [0.5] * len(ids)
    assert any("logprobs" in p for p in check_trajectory(traj, r))


class ScriptedGenerator:
    """Returns fixed texts, one per call, as token ids: the renderer's unit under test is what
    happens around the sampled ids, so their source does not matter here."""

    def __init__(self, tok, texts, cut_last=False):
        self.tok = tok
        self.texts = list(texts)
        self.prompts = []
        self.cut_last = cut_last

    async def generate(self, prompts, sampling):
        self.prompts.append(prompts[0])
        text = self.texts.pop(0)
        ids = self.tok.encode(text, add_special_tokens=False)
        cut = self.cut_last and not self.texts
        if not cut:
            ids.append(self.tok.eos_token_id)
        lps = [-0.5] * len(ids)
        return [Completion(ids=ids, logprobs=lps, text=text, finish_reason="length" if cut else "stop")]


def run_episode(policy, env, task="calc-4"):
    async def go():
        env.reset(seed=0, options={"task_id": task})
        traj = env.trajectory
        while not env.done:
            msg = await policy.act(traj, env)
            env.step(msg)
        return traj

    return asyncio.run(go())


def test_think_stripping_template_leaves_earlier_sampled_tokens_untouched(tok):
    env = CalculatorEnv(difficulty=1)
    first = '<think>I should multiply.</think><tool_call>\n{"name": "calculator", "arguments": {"expression": "9 * 8"}}\n</tool_call>'
    gen = ScriptedGenerator(tok, [first, "<think>The tool said 72.</think>72"])
    policy = LLMPolicy(gen, tok, SamplingParams(temperature=0), chat_template=THINK_STRIPPING)
    traj = run_episode(policy, env)
    assert traj.num_turns == 2 and traj.messages[3] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "calculator",
        "content": "72",
    }
    r = policy.renderer(env.tool_schemas)
    spans = mask_spans(traj.mask)
    sampled_first = tok.encode(first, add_special_tokens=False) + [tok.eos_token_id]
    assert traj.tokens[spans[0][0] : spans[0][1]] == sampled_first
    # the second prompt extended the first record: earlier tokens were never re-rendered
    assert gen.prompts[1][: len(gen.prompts[0]) + len(sampled_first)] == gen.prompts[0] + sampled_first
    assert policy.finish(traj, env) and traj.metadata["token_check"] == "ok"
    # ... whereas rendering the final messages again drops the first turn's reasoning
    rerendered = tok.decode(r.render(traj.messages))
    assert "I should multiply." not in rerendered and "I should multiply." in tok.decode(traj.tokens)
    # message-only data with the same template gets the same record as the rollout did
    ids, mask = r.tokenize_messages(traj.messages)
    assert ids == traj.tokens and mask == traj.mask


def test_a_cut_off_turn_is_closed_with_env_tokens(tok):
    env = CalculatorEnv(difficulty=1, max_turns=3)
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "9 * 8"}}\n</tool_call>'
    gen = ScriptedGenerator(tok, [call, "72 is"], cut_last=True)  # the last turn hits the budget
    policy = LLMPolicy(gen, tok, SamplingParams(temperature=0))
    traj = run_episode(policy, env)
    assert traj.metadata["cut_turns"] == 1
    assert policy.finish(traj, env)
    assert tok.decode(traj.tokens[mask_spans(traj.mask)[-1][0] :]) == "72 is"
    # had another turn followed, the end-of-turn token and separator would be env tokens
    r = policy.renderer(env.tool_schemas)
    traj.messages.append({"role": "user", "content": "go on"})
    nxt = r.next_prompt(traj)
    assert (
        tok.decode(nxt[len(traj.tokens) :])
        == "<|im_end|>\n<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tiny_model_is_deterministic_and_loads(tmp_path, tiny_dir):
    from safetensors.torch import load_file

    from agentgym.cli import main

    assert main(["tiny-model", str(tmp_path / "again")]) == 0
    a = load_file(tiny_dir / "model.safetensors")
    b = load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert a["model.layers.0.self_attn.q_proj.weight"].shape == (128, 128)  # 4 heads of 32


class RecordingGenerator(ScriptedGenerator):
    def __init__(self, tok, texts):
        super().__init__(tok, texts)
        self.max_tokens = []

    async def generate(self, prompts, sampling):
        self.max_tokens.append(sampling.max_tokens)
        return await super().generate(prompts, sampling)


def test_a_conversation_that_outgrows_the_context_ends_as_a_policy_error(tok):
    from agentgym.rollout import run_rollouts

    env = CalculatorEnv(difficulty=1)
    env.reset(seed=0, options={"task_id": "calc-4"})
    first = len(ChatRenderer(tok, env.tool_schemas).next_prompt(env.trajectory))
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "9 * 8"}}\n</tool_call>'
    # room for the first turn (its max_tokens cut to what fits), none for the second
    gen = RecordingGenerator(tok, [call, "72"])
    room = len(call.encode()) + 1
    policy = LLMPolicy(gen, tok, SamplingParams(max_tokens=256), max_model_len=first + room)
    [traj] = run_rollouts("toy/calculator-v0", policy, n=1, env_kwargs={"difficulty": 1}, task_ids=["calc-4"])
    assert gen.max_tokens == [room]
    assert traj.status == "policy_error" and traj.score == 0.0
    assert "fills the context" in traj.metadata["error"] and traj.metadata["token_check"] == "ok"


def test_a_spec_seed_gives_each_episode_and_turn_its_own_request_seed(tok):
    """Reproducible runs whose G samples of a task still differ."""

    class Seeds(ScriptedGenerator):
        seeds: list = []

        async def generate(self, prompts, sampling):
            Seeds.seeds.append(sampling.seed)
            return await super().generate(prompts, sampling)

    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "9 * 8"}}\n</tool_call>'

    def episode(episode_seed):
        env = CalculatorEnv(difficulty=1)
        env.reset(seed=episode_seed, options={"task_id": "calc-4"})
        policy = LLMPolicy(Seeds(tok, [call, "72"]), tok, SamplingParams(seed=5))
        traj = env.trajectory
        while not env.done:
            env.step(asyncio.run(policy.act(traj, env)))
        seeds, Seeds.seeds = Seeds.seeds, []
        return seeds

    a, again, b = episode(1), episode(1), episode(2)
    assert a == again and len(a) == 2 and a[0] != a[1] and not set(a) & set(b)
