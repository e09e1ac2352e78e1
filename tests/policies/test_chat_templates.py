"""Chat-template conformance: templates with the behaviours of the main model families, each
either token-exact (message-only records and rollouts agree, and pass the token check) or
refused with a ``RenderError`` that says why.

The templates are written here to reproduce each family's behaviour, not its text; the tokenizer
is a byte-level BPE with a few merges and a Llama-3-like pre-tokenizer split, so newline runs
and punctuation+newline pieces merge into one token (across a header and a message, too).
"""

from __future__ import annotations

import asyncio

import pytest
from agentgym.envs.toy import CalculatorEnv
from agentgym.policies.llm import LLMPolicy

from agentgym.chat import ChatRenderer, RenderError, check_trajectory, mask_spans
from agentgym.parsing import format_tool_call
from agentgym.policy import Completion, SamplingParams
from agentgym.testing import need
from agentgym.types import Trajectory, tool_call

# ----- templates ----------------------------------------------------------------------------------

# (a) Qwen2.5 / Hermes: the tools as JSON lines in the system turn, <tool_call> blocks after any
# text, consecutive tool results grouped in one user turn as <tool_response> blocks.
HERMES = """\
{%- macro call_args(f) %}{% if f.arguments is string %}{{ f.arguments }}{% else %}{{ f.arguments | tojson }}{% endif %}{% endmacro %}
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}Functions you can call, one JSON schema a line:
{% for t in tools %}{{ t | tojson }}
{% endfor %}Call one by writing <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'system' and loop.first %}
{%- elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content or '' }}
{%- for tc in m.tool_calls or [] %}{% if m.content or not loop.first %}{{ '\\n' }}{% endif %}<tool_call>
{"name": {{ tc.function.name | tojson }}, "arguments": {{ call_args(tc.function) }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}{{ '\\n' }}<tool_response>
{{ m.content }}
</tool_response>
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>
{% endif %}
{%- else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

# (b) Qwen3: as (a), but an assistant turn before the last user message loses its <think> block,
# and a later one has it rewritten to the "<think>\n...\n</think>\n\n" layout.
THINKING = HERMES.replace(
    """{%- elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content or '' }}""",
    """{%- elif m.role == 'assistant' %}
{%- set text = m.content or '' %}
{%- if '</think>' in text %}
{%- set thought = text.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
{%- set text = text.split('</think>')[-1].lstrip('\\n') %}
{%- if loop.index0 > ns.last_user %}{% set text = '<think>\\n' + thought + '\\n</think>\\n\\n' + text %}{% endif %}
{%- endif %}<|im_start|>assistant
{{ text }}""",
).replace(
    "{%- for m in messages %}\n{%- if m.role == 'system' and loop.first %}",
    "{%- set ns = namespace(last_user=-1) %}\n"
    "{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}\n"
    "{%- for m in messages %}\n{%- if m.role == 'system' and loop.first %}",
)

# (c) Llama 3.1: header tokens and no separator; the tools in the first user turn; a call written
# as bare JSON with "parameters" (the message's text dropped, one call per message); tool results
# in an ipython turn.
LLAMA = """\
{{- bos_token }}<|start_header_id|>system<|end_header_id|>

{% if tools %}Environment: ipython
{% endif %}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}<|eot_id|>
{%- set ns = namespace(tools_shown=false) %}
{%- for m in messages %}
{%- if m.role == 'system' and loop.first %}
{%- elif m.role == 'user' %}<|start_header_id|>user<|end_header_id|>

{% if tools and not ns.tools_shown %}{% set ns.tools_shown = true %}To call a function, reply with only {"name": function name, "parameters": its arguments}. The functions:
{% for t in tools %}{{ t | tojson(indent=2) }}
{% endfor %}
{% endif %}{{ m.content }}<|eot_id|>
{%- elif m.role == 'assistant' and m.tool_calls %}
{%- if m.tool_calls | length > 1 %}{{ raise_exception('one tool call per message') }}{% endif %}
{%- set f = m.tool_calls[0].function %}<|start_header_id|>assistant<|end_header_id|>

{"name": {{ f.name | tojson }}, "parameters": {% if f.arguments is string %}{{ f.arguments }}{% else %}{{ f.arguments | tojson }}{% endif %}}<|eot_id|>
{%- elif m.role in ('tool', 'ipython') %}<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

# (d) Mistral: no separators and no generation header; the tools and the system prompt go in
# front of the LAST user message; calls as [TOOL_CALLS][...] after any text; results as
# [TOOL_RESULTS]{...}[/TOOL_RESULTS].
MISTRAL = """\
{%- set ns = namespace(last_user=-1, system='') %}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}
{%- if messages[0].role == 'system' %}{% set ns.system = messages[0].content %}{% endif %}
{{- bos_token }}
{%- for m in messages %}
{%- if m.role == 'user' %}
{%- if loop.index0 == ns.last_user and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]
{%- if loop.index0 == ns.last_user and ns.system %}{{ ns.system }}

{% endif %}{{ m.content }}[/INST]
{%- elif m.role == 'assistant' %}{{ m.content or '' }}
{%- if m.tool_calls %}[TOOL_CALLS][
{%- for tc in m.tool_calls %}{"name": {{ tc.function.name | tojson }}, "arguments": {% if tc.function.arguments is string %}{{ tc.function.arguments }}{% else %}{{ tc.function.arguments | tojson }}{% endif %}}{% if not loop.last %}, {% endif %}
{%- endfor %}]{% endif %}{{ eos_token }}
{%- elif m.role == 'tool' %}[TOOL_RESULTS]{"content": {{ m.content | tojson }}, "call_id": {{ m.tool_call_id | tojson }}}[/TOOL_RESULTS]
{%- endif %}
{%- endfor %}"""

# (e) No tool support (SmolLM2's own template behaves so): every message is its role and its text,
# so tool calls vanish and the tools are never shown.
PLAIN = """\
{%- for m in messages %}{% if loop.first and m.role != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

# (a) with the tool turn left out: tool results vanish.
NO_RESULTS = HERMES.replace("{% elif m.role == 'tool' %}", "{% elif m.role == 'tool' and false %}").replace(
    "{%- else %}<|im_start|>{{ m.role }}", "{%- elif m.role != 'tool' %}<|im_start|>{{ m.role }}"
)

FAMILIES = {
    # name: (template, eos, bos, the call format the renderer should detect)
    "hermes": (HERMES, "<|im_end|>", None, "hermes"),
    "thinking": (THINKING, "<|im_end|>", None, "hermes"),
    "llama": (LLAMA, "<|eot_id|>", "<|begin_of_text|>", "llama3_json"),
    "mistral": (MISTRAL, "</s>", "<s>", "mistral"),
}

# ----- a tokenizer with merges -------------------------------------------------------------------

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_CALLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
]
SPLIT = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
"""pre-tokenizer pieces: words with one leading mark, up to 3 digits, punctuation runs with their
newlines, newline runs (so a header's newline and a message's leading one are one piece)"""
MERGED = ["\n\n", "\n\n\n", ">\n", '{"', '":', '",', '"}', "}}", ' "', " the", " is", "name", "arguments"]
MERGED += ["parameters", "calculator", "expression", "<tool", "_call", "</", "think", "<think", "72", " *"]


def build_tokenizer(template: str, eos: str, bos: str | None):
    """A byte-level BPE whose merges build the strings in ``MERGED`` (each left to right)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    to_chars = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = []
    for word in MERGED:
        [(chars, _)] = to_chars.pre_tokenize_str(word)
        for k in range(2, len(chars) + 1):
            if chars[:k] not in vocab:
                merges.append((chars[: k - 1], chars[k - 1]))
                vocab[chars[:k]] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"), to_chars]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=eos, bos_token=bos, clean_up_tokenization_spaces=False
    )
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    need(module="transformers", install="pip install 'agentgym[train]'")
    template, eos, bos, fmt = FAMILIES[request.param]
    return request.param, build_tokenizer(template, eos, bos), fmt


def tokenizer(template: str, eos: str = "<|im_end|>", bos: str | None = None):
    need(module="transformers", install="pip install 'agentgym[train]'")
    return build_tokenizer(template, eos, bos)


# ----- conversations -----------------------------------------------------------------------------

CALL = {"expression": "9 * 8"}


def calculator():
    env = CalculatorEnv(difficulty=1)
    obs, _ = env.reset(seed=0, options={"task_id": "calc-4"})
    return env, obs


def demo(content: str = "") -> list:
    """A message-only calculator conversation: a structured call, its result, the answer."""
    _, obs = calculator()
    return obs + [
        {"role": "assistant", "content": content, "tool_calls": [tool_call("calculator", CALL)]},
        {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "72"},
        {"role": "assistant", "content": "The product is 72."},
    ]


def sampled_call(fmt: str) -> str:
    """The text a model of the family writes to call the calculator."""
    return format_tool_call("calculator", CALL, fmt)


# ----- token-exact families ----------------------------------------------------------------------


def test_message_only_records_decode_back_to_their_messages(family):
    name, tok, fmt = family
    env, _ = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    assert r.tool_format == fmt
    messages = demo()
    ids, mask = r.tokenize_messages(messages)
    spans = mask_spans(mask)
    assert [tok.decode(ids[a:b]) for a, b in spans] == [
        sampled_call(fmt) + tok.eos_token,
        "The product is 72." + tok.eos_token,
    ]
    # the tool result and the headers around it are env tokens
    assert "72" in tok.decode(ids[spans[0][1] : spans[1][0]])
    traj = Trajectory(messages=messages, tokens=ids, mask=mask, logprobs=[0.0] * len(ids))
    assert check_trajectory(traj, r) == []
    # these templates keep earlier turns as they are: one render gives the same tokens
    assert ids + r.separator == r.render(messages)
    # the check reads calls in the template's format: a record of other calls fails it
    traj.messages[2] = {**messages[2], "tool_calls": [tool_call("calculator", {"expression": "9 * 9"})]}
    assert "assistant turn 0" in check_trajectory(traj, r)[0]


def test_text_beside_a_call_is_kept_or_refused(family):
    name, tok, fmt = family
    env, _ = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    messages = demo(content="I will multiply.")
    if name == "llama":  # its template writes the call alone
        assert set(r.lost) == {"several_calls", "content_with_calls"}
        with pytest.raises(RenderError, match="text beside its tool call.*chat_template"):
            r.tokenize_messages(messages)
        return
    assert r.lost == {}
    ids, mask = r.tokenize_messages(messages)
    traj = Trajectory(messages=messages, tokens=ids, mask=mask, logprobs=[0.0] * len(ids))
    assert check_trajectory(traj, r) == []
    first = tok.decode(ids[slice(*mask_spans(mask)[0])])
    assert first.startswith("I will multiply.") and "calculator" in first


class ScriptedGenerator:
    """Returns fixed texts as token ids, each closed with the end-of-turn token."""

    def __init__(self, tok, texts):
        self.tok = tok
        self.texts = list(texts)
        self.prompts = []

    async def generate(self, prompts, sampling):
        self.prompts.append(prompts[0])
        ids = self.tok.encode(self.texts.pop(0), add_special_tokens=False) + [self.tok.eos_token_id]
        return [Completion(ids=ids, logprobs=[-0.5] * len(ids), text="", finish_reason="stop")]


def rollout(tok, texts):
    env, _ = calculator()
    gen = ScriptedGenerator(tok, texts)
    policy = LLMPolicy(gen, tok, SamplingParams(temperature=0))

    async def go():
        traj = env.trajectory
        while not env.done:
            env.step(await policy.act(traj, env))
        return traj

    traj = asyncio.run(go())
    return traj, policy.renderer(env.tool_schemas), gen, policy.finish(traj, env)


def test_rollouts_are_token_exact_and_equal_the_message_records(family):
    name, tok, fmt = family
    first = sampled_call(fmt)
    if name == "thinking":
        first = "<think>\nNine times eight.\n</think>\n\n" + first
    if name == "llama":
        first = "<|python_tag|>" + first
    answer = " 72" if name == "mistral" else "\n72"  # a leading space; a newline after a header's
    traj, r, gen, ok = rollout(tok, [first, answer])
    assert ok and traj.metadata["token_check"] == "ok"
    assert traj.messages[3]["role"] == "tool" and traj.messages[3]["content"] == "72"  # the env read the call
    spans = mask_spans(traj.mask)
    for (a, b), text in zip(spans, [first, answer], strict=True):
        assert traj.tokens[a:b] == tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    # each prompt extends the record so far: nothing sampled was re-tokenized
    assert gen.prompts[1][: spans[0][1]] == traj.tokens[: spans[0][1]]
    ids, mask = r.tokenize_messages(traj.messages)
    assert ids == traj.tokens and mask == traj.mask


def test_a_newline_after_a_header_merges_yet_the_record_stays_exact():
    """Llama's header ends in a blank line; a message that starts with a newline merges with it
    into one token when the whole conversation is rendered at once."""
    tok = tokenizer(LLAMA, "<|eot_id|>", "<|begin_of_text|>")
    env, obs = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    messages = [*obs, {"role": "assistant", "content": "\nIt is 72."}]
    assert len(tok.encode("\n\n\n", add_special_tokens=False)) == 1
    prompt = r.render(obs, add_generation_prompt=True)
    assert r.render(messages)[: len(prompt)] != prompt  # the header's last token merged away
    ids, mask = r.tokenize_messages(messages)
    a, b = mask_spans(mask)[0]
    assert ids[:a] == prompt
    assert ids[a:b] == tok.encode("\nIt is 72.", add_special_tokens=False) + [tok.eos_token_id]
    assert check_trajectory(Trajectory(messages=messages, tokens=ids, mask=mask), r) == []


def test_stripped_thinking_never_changes_the_record():
    """Qwen3-style: a later user message strips the earlier turn's <think> block from a full
    render, but the record (grown by deltas) keeps what was sampled."""
    tok = tokenizer(THINKING)
    env, obs = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    first = "<think>\nEasy.\n</think>\n\n2"
    messages = [*obs, {"role": "assistant", "content": first}, {"role": "user", "content": "And 3 * 3?"}]
    ids, mask = r.tokenize_messages(messages, add_generation_prompt=True)
    assert "Easy." in tok.decode(ids) and "Easy." not in tok.decode(r.render(messages))
    messages.append({"role": "assistant", "content": "9"})
    ids, mask = r.tokenize_messages(messages)
    assert [tok.decode(ids[a:b]) for a, b in mask_spans(mask)] == [first + "<|im_end|>", "9<|im_end|>"]
    # a rewritten layout is not what was sampled: the record of such a message fails the check
    loose = [*obs, {"role": "assistant", "content": "<think>Easy.</think>2"}]
    ids, mask = r.tokenize_messages(loose)
    assert check_trajectory(Trajectory(messages=loose, tokens=ids, mask=mask), r)


# ----- refused templates -------------------------------------------------------------------------


def test_a_template_that_drops_tool_calls_is_refused():
    tok = tokenizer(PLAIN)
    env, obs = calculator()
    with pytest.raises(RenderError) as err:
        ChatRenderer(tok, env.tool_schemas)
    why = str(err.value)
    assert "drops the tool calls" in why and "'<|im_start|>assistant\\n<|im_end|>\\n'" in why
    assert "does not show the tools" in why and "chat_template=" in why
    # so is a policy on it, before anything is sampled
    gen = ScriptedGenerator(tok, ["anything"])
    with pytest.raises(RenderError, match="drops the tool calls"):
        asyncio.run(LLMPolicy(gen, tok).act(env.trajectory, env))
    assert gen.prompts == []
    # without tools, plain chat still renders; a message with a call does not
    r = ChatRenderer(tok)
    chat = [*obs, {"role": "assistant", "content": "72"}]
    ids, mask = r.tokenize_messages(chat)
    assert check_trajectory(Trajectory(messages=chat, tokens=ids, mask=mask), r) == []
    with pytest.raises(RenderError, match="drops the tool calls.*would not hold it"):
        r.tokenize_messages(demo())


def test_a_template_that_drops_tool_results_is_refused():
    tok = tokenizer(NO_RESULTS)
    env, _ = calculator()
    with pytest.raises(RenderError, match="drops tool results"):
        ChatRenderer(tok, env.tool_schemas)
    with pytest.raises(RenderError, match="drops tool results"):
        ChatRenderer(tok).tokenize_messages(demo())


def test_one_call_per_message_templates_refuse_several():
    tok = tokenizer(LLAMA, "<|eot_id|>", "<|begin_of_text|>")
    env, obs = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    two = [tool_call("calculator", CALL), tool_call("calculator", {"expression": "1"}, "call_1")]
    with pytest.raises(RenderError, match="more than one tool call \\(one tool call per message\\)"):
        r.tokenize_messages([*obs, {"role": "assistant", "content": "", "tool_calls": two}])


def test_a_template_that_moves_earlier_text_cannot_grow_a_record():
    """Mistral-style: the tools and system prompt sit before the last user message, so a new user
    message rewrites the start of the conversation."""
    tok = tokenizer(MISTRAL, "</s>", "<s>")
    env, obs = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    messages = [*obs, {"role": "assistant", "content": "2"}, {"role": "user", "content": "And 3 * 3?"}]
    with pytest.raises(
        RenderError, match="changes earlier turns when messages are appended.*AVAILABLE_TOOLS"
    ):
        r.tokenize_messages(messages, add_generation_prompt=True)


def test_a_named_format_the_template_does_not_write_is_refused():
    tok = tokenizer(HERMES)
    env, _ = calculator()
    with pytest.raises(RenderError, match="'mistral' parser"):
        ChatRenderer(tok, env.tool_schemas, tool_format="mistral")
    assert ChatRenderer(tok, env.tool_schemas, tool_format="hermes").tool_format == "hermes"
    with pytest.raises(ValueError, match="tool_format must be one of"):
        ChatRenderer(tok, tool_format="xml")  # type: ignore[arg-type]


def test_the_probe_runs_once_per_renderer():
    """The tool-support probe happens when the renderer is built; growing a record renders only
    what it needs."""
    tok = tokenizer(HERMES)
    env, _ = calculator()
    r = ChatRenderer(tok, env.tool_schemas)
    calls = []
    render = r.render
    r.render = lambda *a, **k: calls.append(1) or render(*a, **k)  # type: ignore[method-assign]
    r.tokenize_messages(demo())
    assert len(calls) == 4  # the prompt, two assistant turns, one env delta
    assert r.lost == {}
