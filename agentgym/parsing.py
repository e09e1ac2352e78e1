"""Tool-call parsing from model text, per model family, in one place.

Formats (``FORMATS``):
- ``hermes`` (Hermes, Qwen 2.5/3): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
  blocks anywhere in the reply, prose around them.
- ``json``: the whole reply is a JSON object ``{"name", "arguments"}`` (or a list of them),
  optionally inside a ```json fence.
- ``llama3_json`` (Llama 3.1-3.3): the reply is ``{"name": ..., "parameters": {...}}``, possibly
  after ``<|python_tag|>`` (prose before the tag is kept as prose), several calls joined by ``;``.
- ``mistral``: prose, then ``[TOOL_CALLS]`` and a JSON list of ``{"name", "arguments"}`` objects;
  the newer ``[TOOL_CALLS]name[ARGS]{...}`` form (one marker per call) is read too.
- ``auto``: decided by the reply's markers: ``<tool_call>`` is hermes, ``[TOOL_CALLS]`` mistral,
  ``<|python_tag|>`` llama3_json, anything else plain JSON. Every format takes ``arguments`` or
  ``parameters`` as the arguments key.

The parser never raises and runs in linear time on any input: it scans with ``str.find`` and
``json.JSONDecoder.raw_decode`` (each character is read a bounded number of times), no
backtracking regular expressions. A block that looks like a tool call but is malformed becomes
an entry in ``errors``, which the environment shows the model (the first ``MAX_ERRORS``, then a
count). NaN and Infinity, which JSON does not have, are refused.

>>> r = parse_tool_calls('I will add. <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>')
>>> r.tool_calls[0]["function"]["name"], r.errors
('add', [])
>>> parse_tool_calls('<tool_call>{"name": "add", </tool_call>').errors
['tool call 1 is not valid JSON: Expecting property name enclosed in double quotes at char 15']
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgym.types import ToolCall

Format = Literal["auto", "hermes", "json", "llama3_json", "mistral"]
FORMATS: tuple[Format, ...] = ("auto", "hermes", "json", "llama3_json", "mistral")

OPEN, CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
TOOL_CALLS, ARGS = "[TOOL_CALLS]", "[ARGS]"
MAX_ERRORS = 8
"""malformed calls reported one by one; a reply with more gets one line counting the rest"""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use a number or a string)")


_decoder = json.JSONDecoder(parse_constant=_no_constant)


@dataclass
class ParseResult:
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """one readable reason per malformed call, for the model to see"""
    arguments: list[dict[str, Any]] = field(default_factory=list)
    """the decoded arguments of each call in ``tool_calls`` (so they are not decoded again)"""


def _cap_errors(result: ParseResult) -> ParseResult:
    extra = len(result.errors) - MAX_ERRORS
    if extra > 0:
        result.errors[MAX_ERRORS:] = [f"{extra} more malformed tool calls (not shown)"]
    return result


def _to_call(obj: Any, index: int) -> tuple[ToolCall, dict[str, Any]] | str:
    """A decoded JSON value as a ToolCall with its decoded arguments, or the reason it is not one."""
    if not isinstance(obj, dict):
        return f"tool call {index} must be a JSON object with 'name' and 'arguments'"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return f"tool call {index} has no 'name' string"
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = loads_json(args) if args.strip() else {}
        except (ValueError, RecursionError) as e:
            return f"tool call {index} has arguments that are not valid JSON: {getattr(e, 'msg', e)}"
    if not isinstance(args, dict):
        return f"tool call {index} must have 'arguments' as a JSON object"
    try:
        encoded = json.dumps(args, ensure_ascii=False)
    except (ValueError, RecursionError):
        return f"tool call {index} has arguments that cannot be encoded"
    return {
        "id": f"call_{index - 1}",
        "type": "function",
        "function": {"name": name, "arguments": encoded},
    }, args


try:
    from orjson import loads as _orjson_loads
except ImportError:  # optional speed-up
    _orjson_loads = None

_SPACE = re.compile(r"\s*")
_LONG_NUMBER = re.compile(r"\d{17}")
"""a digit run orjson may not read exactly (it turns integers past 64 bits into floats)"""


def loads_json(text: str) -> Any:
    """``json.loads`` without the NaN / Infinity extensions, which JSON does not have: how tool-call
    arguments are decoded, from a model's text and from structured calls alike. orjson reads the
    text first when it is installed (several times faster); long digit runs and whatever orjson
    refuses go to the json module, so every value and every error is the json module's."""
    if _orjson_loads is not None and not _LONG_NUMBER.search(text):
        try:
            return _orjson_loads(text)
        except ValueError:
            pass
    return _decoder.decode(text)


def _decode(text: str) -> tuple[Any, str | None]:
    try:
        return loads_json(text), None
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at char {e.pos}"
    except (RecursionError, ValueError) as e:
        return None, str(e)[:200]


def _decode_through_close(text: str, start: int, stop: int) -> tuple[Any, int] | None:
    """Decode one JSON value at ``start`` whose strings may hold the closing tag, reading no
    further than ``stop``; returns it and the end of its ``</tool_call>``, or None."""
    region = text[start:stop]
    at = len(region) - len(region.lstrip())
    try:
        obj, end = _decoder.raw_decode(region, at)
    except (ValueError, RecursionError):
        return None
    rest = len(region) - len(region[end:].lstrip())
    if not region.startswith(CLOSE, rest) or not isinstance(obj, dict):
        return None
    return obj, start + rest + len(CLOSE)


def _hermes_block(text: str, start: int, budget: list[int]) -> tuple[Any, str | None, int]:
    """The block whose ``<tool_call>`` opens at ``start``: its decoded JSON (or an error) and the
    end of its ``</tool_call>`` (``len(text)`` when it is never closed).

    ``budget`` holds how many characters the scans past the next opening tag may still read (the
    caller starts it at twice the text's length), which keeps a whole reply's parse linear."""
    body_start = start + len(OPEN)
    end = text.find(CLOSE, body_start)
    body = text[body_start:] if end < 0 else text[body_start:end]
    obj, err = _decode(body.strip())
    if err is not None and end >= 0 and '"' in body:
        # the closing tag may sit inside a JSON string (code that mentions it): decode the value
        # itself, up to the next opening tag, or, where that tag sits inside a string too and the
        # budget allows, to the end of the text
        nxt = text.find(OPEN, body_start)
        found = _decode_through_close(text, body_start, len(text) if nxt < 0 else nxt)
        if found is None and nxt >= 0 and budget[0] > 0:
            found = _decode_through_close(text, body_start, len(text))
            budget[0] -= (found[1] if found else len(text)) - body_start
        if found is not None:
            return found[0], None, found[1]
    return obj, err, len(text) if end < 0 else end + len(CLOSE)


def _parse_hermes(text: str) -> ParseResult:
    result = ParseResult()
    pos = 0
    index = 0
    budget = [2 * len(text)]
    while (start := text.find(OPEN, pos)) >= 0:
        index += 1
        obj, err, pos = _hermes_block(text, start, budget)
        if err is not None:
            result.errors.append(f"tool call {index} is not valid JSON: {err}")
            continue
        _add_call(result, obj, index)
    return _cap_errors(result)


def _strip_fence(text: str) -> str:
    s = text.strip()
    if s.startswith("```"):
        newline = s.find("\n")
        if newline >= 0 and s.endswith("```") and len(s) > 6:
            return s[newline + 1 : -3].strip()
    return s


def _parse_json(text: str) -> ParseResult:
    s = _strip_fence(text)
    if not s or s[0] not in "[{":
        return ParseResult()
    obj, err = _decode(s)
    if err is not None:
        # Only complain when it plainly tried to be a tool call.
        if '"name"' in s[:200]:
            return ParseResult(errors=[f"tool call 1 is not valid JSON: {err}"])
        return ParseResult()
    items = obj if isinstance(obj, list) else [obj]
    if not items or not all(isinstance(i, dict) and "name" in i for i in items):
        return ParseResult()
    result = ParseResult()
    _add_calls(result, items, 0)
    return _cap_errors(result)


def _add_calls(result: ParseResult, items: list[Any], index: int) -> int:
    """Append each decoded item as a call (or the reason it is not one); returns the last index."""
    for item in items:
        index += 1
        _add_call(result, item, index)
    return index


def _add_call(result: ParseResult, item: Any, index: int) -> None:
    """Append one decoded item as call number ``index``, or the reason it is not a call."""
    call = _to_call(item, index)
    if isinstance(call, str):
        result.errors.append(call)
    else:
        result.tool_calls.append(call[0])
        result.arguments.append(call[1])


def _parse_llama3(text: str) -> ParseResult:
    tag = text.find(PYTHON_TAG)
    s = text[tag + len(PYTHON_TAG) :].strip() if tag >= 0 else text.strip()
    if tag < 0 and (not s or s[0] not in "[{"):
        return ParseResult()  # a final answer
    items: list[Any] = []
    err = None
    pos = _SPACE.match(s).end()
    while pos < len(s):
        try:
            obj, pos = _decoder.raw_decode(s, pos)
        except json.JSONDecodeError as e:
            err = f"tool call {len(items) + 1} is not valid JSON: {e.msg} at char {e.pos}"
            break
        except (ValueError, RecursionError) as e:
            err = f"tool call {len(items) + 1} is not valid JSON: {str(e)[:200]}"
            break
        items.extend(obj if isinstance(obj, list) else [obj])
        pos = _SPACE.match(s, pos).end()
        if pos < len(s):
            if s[pos] != ";":
                err = f"text after tool call {len(items)} at char {pos} (join several calls with ';')"
                break
            pos = _SPACE.match(s, pos + 1).end()
    looks_like_a_call = bool(items) and isinstance(items[0], dict) and "name" in items[0]
    if tag < 0 and not looks_like_a_call and '"name"' not in s[:200]:
        return ParseResult()  # JSON, but not a tool call (complain only when it plainly tried)
    result = ParseResult()
    _add_calls(result, items, 0)
    if err is not None:
        result.errors.append(err)
    return _cap_errors(result)


def _parse_mistral(text: str) -> ParseResult:
    result = ParseResult()
    index = 0
    start = text.find(TOOL_CALLS)
    while start >= 0:
        # each marker's region ends at the next marker, so the scan stays linear
        nxt = text.find(TOOL_CALLS, start + len(TOOL_CALLS))
        region = text[start + len(TOOL_CALLS) : len(text) if nxt < 0 else nxt].strip()
        start = nxt
        if region[:1] in ("[", "{"):
            obj, err = _decode(region)
            if err is not None:
                index += 1
                result.errors.append(f"tool call {index} is not valid JSON: {err}")
            else:
                index = _add_calls(result, obj if isinstance(obj, list) else [obj], index)
            continue
        at = region.find(ARGS)
        if at < 0:
            index += 1
            result.errors.append(f"tool call {index} has neither a JSON list nor a name and {ARGS}")
            continue
        args, err = _decode(region[at + len(ARGS) :].strip())
        if err is not None:
            index += 1
            result.errors.append(f"tool call {index} has arguments that are not valid JSON: {err}")
            continue
        index = _add_calls(result, [{"name": region[:at].strip(), "arguments": args}], index)
    return _cap_errors(result)


def detect_format(text: str) -> Format:
    """The format ``auto`` reads a reply in, from the first of its markers (a later one may sit
    inside a call's arguments).

    >>> detect_format("[TOOL_CALLS][]"), detect_format('{"name": "f"}')
    ('mistral', 'json')
    >>> detect_format('<|python_tag|>{"name": "w", "parameters": {"s": "<tool_call>"}}')
    'llama3_json'
    """
    found = [(at, fmt) for marker, fmt in _MARKERS if (at := text.find(marker)) >= 0]
    return min(found)[1] if found else "json"


_MARKERS: list[tuple[str, Format]] = [(OPEN, "hermes"), (TOOL_CALLS, "mistral"), (PYTHON_TAG, "llama3_json")]


def parse_tool_calls(text: Any, fmt: Format = "auto") -> ParseResult:
    """Find the tool calls in a model's reply. Never raises; non-text input gives no calls.

    Results are memoised (an env, its verifier and the format reward all parse the same reply),
    so treat the returned object as read-only."""
    if not isinstance(text, str):
        return ParseResult()
    return _parse_cached(text, fmt)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str, fmt: Format) -> ParseResult:
    if fmt == "auto":
        fmt = detect_format(text)
    if fmt == "hermes":
        return _parse_hermes(text) if OPEN in text else ParseResult()
    if fmt == "mistral":
        return _parse_mistral(text) if TOOL_CALLS in text else ParseResult()
    if fmt == "llama3_json":
        return _parse_llama3(text)
    # Fast path for the common final answer: not JSON-looking.
    if text.lstrip()[:1] not in ("{", "[", "`"):
        return ParseResult()
    return _parse_json(text)


def format_tool_call(name: str, arguments: dict[str, Any], fmt: Format = "auto") -> str:
    """Render a tool call as the model would write it (the inverse of ``parse_tool_calls``;
    ``auto`` writes hermes).

    >>> format_tool_call("add", {"a": 1})
    '<tool_call>\\n{"name": "add", "arguments": {"a": 1}}\\n</tool_call>'
    >>> format_tool_call("add", {"a": 1}, "mistral")
    '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]'
    """
    if fmt == "llama3_json":
        return json.dumps({"name": name, "parameters": arguments}, ensure_ascii=False)
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    if fmt == "mistral":
        return f"{TOOL_CALLS}[{body}]"
    return body if fmt == "json" else f"{OPEN}\n{body}\n{CLOSE}"


def strip_tool_calls(text: str, fmt: Format = "auto") -> str:
    """The reply's prose without its tool calls (used by exporters and the token check): hermes
    blocks cut out, the text before ``[TOOL_CALLS]`` or ``<|python_tag|>``, and nothing of a
    reply that is all JSON calls.

    >>> strip_tool_calls("Sure. [TOOL_CALLS][]")
    'Sure.'
    >>> strip_tool_calls('Writing it. <tool_call>{"name": "w", "arguments": {"s": "</tool_call>"}}</tool_call> Done.')
    'Writing it.  Done.'
    """
    if fmt == "auto":
        fmt = detect_format(text)
    if fmt == "mistral" or (fmt == "llama3_json" and PYTHON_TAG in text):
        marker = TOOL_CALLS if fmt == "mistral" else PYTHON_TAG
        return text.split(marker, 1)[0].strip()
    if fmt in ("json", "llama3_json"):
        return "" if parse_tool_calls(text, fmt).tool_calls else text.strip()
    out = []
    pos = 0
    budget = [2 * len(text)]
    while (start := text.find(OPEN, pos)) >= 0:
        out.append(text[pos:start])
        pos = _hermes_block(text, start, budget)[2]
    out.append(text[pos:])
    return "".join(out).strip()
