"""A tiny Llama-architecture model with a byte-level tokenizer and a tool-aware chat template,
built fully offline in seconds. Tests, benchmarks and the quickstart use it.

Run it from the command line::

    agentgym tiny-model /tmp/tiny            # ~0.4M parameters
    agentgym tiny-model /tmp/small --size small

or from Python: ``build_tiny_model("/tmp/tiny")``. The same ``seed`` always gives the same
weights. The model is untrained (it writes noise) but every backend loads it: transformers,
vLLM (GPU or CPU; head_dim is 32 so the CPU attention kernels accept it) and vLLM's server.

The tokenizer is a byte-level BPE with no merges: 4 special tokens plus the 256 bytes, so any
text round-trips exactly. The chat template is ChatML-style: tools are listed compactly (name and parameters) in the
system turn, so prompts stay short for a model this small;
assistant tool calls render as Hermes ``<tool_call>`` JSON blocks, tool results as ``tool`` turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
"""ids 0-3; bytes follow at ids 4-259"""

CHAT_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}Tools: {% for t in tools %}{{ t.function.name }}(\
{{ (t.function.parameters.properties or {}).keys() | join(', ') }}){% if not loop.last %}, {% endif %}{% endfor %}{{ "\\n" }}\
Call one with <tool_call>{"name": ..., "arguments": {...}}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'system' and loop.first %}
{%- elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content or '' }}
{%- for tc in m.tool_calls or [] %}{% if not loop.first or m.content %}
{% endif %}<tool_call>
{"name": {{ tc.function.name | tojson }}, "arguments": \
{% if tc.function.arguments is string %}{{ tc.function.arguments }}{% else %}{{ tc.function.arguments | tojson }}{% endif %}}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content or '' }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@dataclass
class TinySize:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


SIZES = {
    "tiny": TinySize(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
    "small": TinySize(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8),
}
"""size name -> shape; head_dim is 32 in both (vLLM's CPU backend needs at least 32)"""

VOCAB_SIZE = 260
"""4 specials + 256 bytes; no padding rows, so every id the model can sample decodes"""


def build_tokenizer():
    """The byte-level tokenizer with the chat template, as a transformers fast tokenizer.

    >>> tok = build_tokenizer()
    >>> ids = tok.encode("héllo")
    >>> len(ids), tok.decode(ids)
    (6, 'héllo')
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised Llama model, its tokenizer and chat template to ``out_dir``.

    Args:
        out_dir: directory to create (or overwrite files in).
        size: ``tiny`` (~0.4M parameters) or ``small`` (~3.4M).
        seed: the weights depend only on this seed and the size.

    Returns:
        The directory, loadable with ``AutoModelForCausalLM.from_pretrained`` and by vLLM.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        max_position_embeddings=4096,
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        do_sample=False,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # vLLM reads the template from tokenizer_config.json; keep a copy beside it for other tools.
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out / "agentgym_tiny.json").write_text(json.dumps({"size": size, "seed": seed}) + "\n")
    return out


def fine_tune(
    model_dir: str | Path,
    conversations: list[list[dict]],
    tools: list[dict] | None = None,
    steps: int = 100,
    lr: float = 5e-3,
    batch_size: int = 8,
    seed: int = 0,
) -> Path:
    """Teach a small model some conversations in place (loss on assistant tokens only).

    Enough to make the tiny model follow a format: about 100 steps on 32 scripted calculator
    conversations make it call the tool, read the result and answer, so rollouts on it are
    multi-turn. Runs on one CPU thread (faster than several for matrices this small).

    Args:
        model_dir: a model directory (rewritten in place).
        conversations: chat messages (OpenAI format), tokenized with ``agentgym.chat``.
        tools: the tool schemas shown in the prompts.
        steps: optimizer steps of ``batch_size`` conversations drawn at random.
        lr: AdamW learning rate.
        batch_size: conversations per step.
        seed: the result depends only on the inputs and this seed.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym.chat import ChatRenderer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        renderer = ChatRenderer(tok, tools)
        rows = [renderer.tokenize_messages(c) for c in conversations]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (x, m) in enumerate(rows):
            ids[i, : len(x)] = torch.tensor(x)
            attn[i, : len(x)] = 1
            labels[i, : len(x)] = torch.where(torch.tensor(m) == 1, torch.tensor(x), -100)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            batch = torch.randint(0, len(rows), (batch_size,))
            loss = model(input_ids=ids[batch], attention_mask=attn[batch], labels=labels[batch]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.save_pretrained(model_dir)
    finally:
        torch.set_num_threads(threads)
    return Path(model_dir)
