"""Tool-call parsing from model text, per model family, in one place.

Formats:
- ``hermes`` (Hermes, Qwen 2.5/3): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
- ``json``: the whole reply is a JSON object ``{"name", "arguments"}`` (or a list of them),
  optionally inside a ```json fence.
- ``auto``: hermes tags when present, else plain JSON.

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

Format = Literal["auto", "hermes", "json"]
FORMATS = ("auto", "hermes", "json")

OPEN, CLOSE = "<tool_call>", "</tool_call>"
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


def _parse_hermes(text: str) -> ParseResult:
    result = ParseResult()
    pos = 0
    index = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            break
        index += 1
        body_start = start + len(OPEN)
        end = text.find(CLOSE, body_start)
        body = text[body_start:] if end < 0 else text[body_start:end]
        pos = len(text) if end < 0 else end + len(CLOSE)
        obj, err = _decode(body.strip())
        if err is not None and end >= 0 and '"' in body:
            # the closing tag may sit inside a JSON string (code that mentions it): decode the
            # value itself, up to the next opening tag at most, so the scan stays linear
            nxt = text.find(OPEN, body_start)
            found = _decode_through_close(text, body_start, len(text) if nxt < 0 else nxt)
            if found is not None:
                (obj, pos), err = found, None
        if err is not None:
            result.errors.append(f"tool call {index} is not valid JSON: {err}")
            continue
        call = _to_call(obj, index)
        if isinstance(call, str):
            result.errors.append(call)
        else:
            result.tool_calls.append(call[0])
            result.arguments.append(call[1])
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
    for index, item in enumerate(items, 1):
        call = _to_call(item, index)
        if isinstance(call, str):
            result.errors.append(call)
        else:
            result.tool_calls.append(call[0])
            result.arguments.append(call[1])
    return _cap_errors(result)


def parse_tool_calls(text: Any, fmt: Format = "auto") -> ParseResult:
    """Find the tool calls in a model's reply. Never raises; non-text input gives no calls.

    Results are memoised (an env, its verifier and the format reward all parse the same reply),
    so treat the returned object as read-only."""
    if not isinstance(text, str):
        return ParseResult()
    return _parse_cached(text, fmt)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str, fmt: Format) -> ParseResult:
    if OPEN not in text:
        # Fast path for the common final answer: no tag, and not JSON-looking.
        head = text.lstrip()[:1]
        if head not in ("{", "[", "`") or fmt == "hermes":
            return ParseResult()
    if fmt == "hermes":
        return _parse_hermes(text)
    if fmt == "json":
        return _parse_json(text)
    if OPEN in text:
        return _parse_hermes(text)
    return _parse_json(text)


def format_tool_call(name: str, arguments: dict[str, Any], fmt: Format = "auto") -> str:
    """Render a tool call as the model would write it (the inverse of ``parse_tool_calls``).

    >>> format_tool_call("add", {"a": 1})
    '<tool_call>\\n{"name": "add", "arguments": {"a": 1}}\\n</tool_call>'
    """
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return body if fmt == "json" else f"{OPEN}\n{body}\n{CLOSE}"


def strip_tool_calls(text: str) -> str:
    """The reply's prose without its ``<tool_call>`` blocks (used by exporters)."""
    out = []
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        end = text.find(CLOSE, start)
        if end < 0:
            break
        pos = end + len(CLOSE)
    return "".join(out).strip()
