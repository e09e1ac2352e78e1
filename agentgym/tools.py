"""Tools: plain typed functions whose JSON schema comes from the signature and the docstring.

>>> @tool
... def add(a: int, b: int = 0) -> int:
...     '''Add two integers.
...
...     Args:
...         a: the first addend
...         b: the second addend
...     '''
...     return a + b
>>> add.schema["function"]["parameters"]["required"]
['a']
>>> add.call({"a": 2, "b": 3})
5
>>> add.call({"a": "x"})
Traceback (most recent call last):
...
agentgym.tools.ToolArgumentError: argument 'a' must be an integer, got 'x'
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin


class ToolArgumentError(ValueError):
    """The model called a tool with missing, unknown or ill-typed arguments."""


_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema_for(annotation: Any) -> dict[str, Any]:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        members = [a for a in args if a is not type(None)]
        schema = (
            _schema_for(members[0]) if len(members) == 1 else {"anyOf": [_schema_for(a) for a in members]}
        )
        return {**schema, "nullable": True} if len(members) < len(args) else schema
    if origin is Literal:
        values = list(get_args(annotation))
        schema = _schema_for(type(values[0]))
        return {**schema, "enum": values}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        return {**(_schema_for(type(values[0])) if values else {}), "enum": values}
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_for(args[0])}
        if args:
            items = [_schema_for(a) for a in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return {"type": "array", **({"items": _schema_for(args[0])} if args else {})}
    if origin is dict or annotation is dict:
        args = get_args(annotation)
        return {"type": "object", **({"additionalProperties": _schema_for(args[1])} if args else {})}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    return {}


def _converter(annotation: Any) -> Callable[[Any], Any] | None:
    """How a checked JSON value becomes the Python value the function declared (an enum member,
    a tuple, a set), or None when the JSON value is already it."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        inner = _converter(members[0]) if len(members) == 1 else None
        return (lambda v: None if v is None else inner(v)) if inner is not None else None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    for kind in (tuple, set, frozenset):
        if origin is kind or annotation is kind:
            return kind
    return None


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and a map of argument descriptions."""
    doc = inspect.cleandoc(doc or "")
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    section = None
    current = None
    for line in doc.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Parameters):", stripped):
            section = "args"
            continue
        if re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)?:", stripped):
            section = "other"
            continue
        if section is None:
            if stripped or summary_lines:
                summary_lines.append(stripped)
        elif section == "args":
            m = re.match(r"^(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped)
            if m and not line.startswith(" " * 8):
                current = m.group(1)
                params[current] = m.group(3)
            elif current and stripped:
                params[current] += " " + stripped
    summary = " ".join(" ".join(summary_lines).split())
    return summary, params


def _check_value(name: str, value: Any, schema: dict[str, Any]) -> Any:
    if type(value) is str and schema.get("type") == "string" and "enum" not in schema:
        return value  # the common case, first
    if value is None and schema.get("nullable"):
        return None
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentError(f"argument {name!r} must be one of {schema['enum']}, got {value!r}")
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check_value(name, value, option)
            except ToolArgumentError:
                pass
        raise ToolArgumentError(f"argument {name!r} has the wrong type: {value!r}")
    kind = schema.get("type")
    if kind == "integer":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ToolArgumentError(f"argument {name!r} must be an integer, got {value!r}")
        return int(value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ToolArgumentError(f"argument {name!r} must be a finite number, got {value!r}")
        return value
    if kind == "string" and not isinstance(value, str):
        raise ToolArgumentError(f"argument {name!r} must be a string, got {value!r}")
    if kind == "boolean" and not isinstance(value, bool):
        raise ToolArgumentError(f"argument {name!r} must be true or false, got {value!r}")
    if kind == "array":
        if not isinstance(value, list):
            raise ToolArgumentError(f"argument {name!r} must be a list, got {value!r}")
        fixed = schema.get("prefixItems")
        if fixed is not None:
            if len(value) != len(fixed):
                raise ToolArgumentError(
                    f"argument {name!r} must be a list of {len(fixed)} items, got {value!r}"
                )
            return [
                _check_value(f"{name}[{i}]", v, s) for i, (v, s) in enumerate(zip(value, fixed, strict=True))
            ]
        if schema.get("items"):
            return [_check_value(f"{name}[{i}]", v, schema["items"]) for i, v in enumerate(value)]
    if kind == "object":
        if not isinstance(value, dict):
            raise ToolArgumentError(f"argument {name!r} must be an object, got {value!r}")
        if schema.get("additionalProperties"):
            return {
                k: _check_value(f"{name}[{k!r}]", v, schema["additionalProperties"]) for k, v in value.items()
            }
    return value


_PLAIN = frozenset({str, int, float, bool, list, dict, type(None)})
"""result types that are never awaitable (skips the slower ``inspect.isawaitable``)"""


@dataclass(frozen=True)
class Tool:
    """A callable the model may use, with its OpenAI-style JSON schema."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    method: bool = False
    """the function's first parameter is ``self``: call it with the env as ``owner``"""
    converters: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    """argument name -> how its checked JSON value becomes the declared type (enum, tuple)"""

    @property
    def is_async(self) -> bool:
        """The function is ``async def``: ``call`` returns a coroutine, ``acall`` awaits it."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check the model's arguments against the schema; returns them coerced (e.g. 2.0 -> 2)."""
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        props = self.parameters["properties"]
        if not arguments.keys() <= props.keys():
            unknown = sorted(set(arguments) - set(props))
            raise ToolArgumentError(f"unknown argument(s) {unknown}; {self.name} takes {sorted(props)}")
        missing = [p for p in self.parameters.get("required", ()) if p not in arguments]
        if missing:
            raise ToolArgumentError(f"missing required argument(s) {missing}")
        return {k: _check_value(k, v, props[k]) for k, v in arguments.items()}

    def call(self, arguments: Any, owner: Any = None) -> Any:
        """Validate the model's arguments and call; a method tool gets ``owner`` as ``self``.
        For an async tool this returns the coroutine (see ``acall``)."""
        args = self.validate(arguments)
        for key, convert in self.converters.items():
            if key in args:
                try:
                    args[key] = convert(args[key])
                except (TypeError, ValueError) as e:
                    raise ToolArgumentError(f"argument {key!r}: {e}") from None
        return self.fn(owner, **args) if self.method else self.fn(**args)

    async def acall(self, arguments: Any, owner: Any = None) -> Any:
        """``call``, awaiting the result when the tool is async."""
        result = self.call(arguments, owner)
        return await result if inspect.isawaitable(result) else result

    def call_blocking(self, arguments: Any, owner: Any = None) -> Any:
        """``call`` that also runs an async tool to completion (in a fresh event loop: on a
        helper thread when this thread already runs one). Used by the synchronous ``step``."""
        result = self.call(arguments, owner)
        if type(result) in _PLAIN or not inspect.isawaitable(result):
            return result

        async def wait() -> Any:
            return await result

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(wait())
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, wait()).result()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None):
    """Make a ``Tool`` from a typed function; its docstring's summary and ``Args:`` describe it.

    A first parameter named ``self`` is left out of the schema, so methods of an environment work
    as tools (the env passes itself when it calls them).
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        summary, arg_docs = _parse_docstring(f.__doc__ or "")
        try:
            hints = typing.get_type_hints(f)
        except Exception:
            hints = {}
        props: dict[str, Any] = {}
        required: list[str] = []
        converters: dict[str, Callable[[Any], Any]] = {}
        for p in inspect.signature(f).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(p.name, p.annotation)
            schema = _schema_for(annotation)
            convert = _converter(annotation)
            if convert is not None:
                converters[p.name] = convert
            if p.name in arg_docs:
                schema["description"] = arg_docs[p.name]
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
            props[p.name] = schema
        params = {"type": "object", "properties": props, "required": required}
        first = next(iter(inspect.signature(f).parameters), None)
        return Tool(
            fn=f,
            name=name or f.__name__,
            description=summary,
            parameters=params,
            method=first == "self",
            converters=converters,
        )

    return wrap(fn) if fn is not None else wrap
