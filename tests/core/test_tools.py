import asyncio
import enum
from typing import Literal, Optional

import pytest

from agentgym.tools import ToolArgumentError, tool


@tool
def search(
    query: str,
    limit: int = 5,
    exact: bool = False,
    sort: Literal["new", "old"] = "new",
    tags: list[str] | None = None,
) -> str:
    """Search the catalogue.

    Args:
        query: words to look for
        limit: most results to return,
            counted after filtering
        exact: match whole words only
        sort: order of results
        tags: only items with these tags
    """
    return f"{query}:{limit}:{exact}:{sort}:{tags}"


def test_schema_from_signature_and_docstring():
    fn = search.schema["function"]
    assert fn["name"] == "search"
    assert fn["description"] == "Search the catalogue."
    props = fn["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "words to look for"}
    assert props["limit"] == {
        "type": "integer",
        "description": "most results to return, counted after filtering",
    }
    assert props["exact"]["type"] == "boolean"
    assert props["sort"]["enum"] == ["new", "old"]
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert fn["parameters"]["required"] == ["query"]


def test_validation():
    assert search.call({"query": "x", "limit": 3.0}) == "x:3:False:new:None"
    cases = [
        ({}, "missing required argument(s) ['query']"),
        ({"query": "x", "color": 1}, "unknown argument(s) ['color']"),
        ({"query": 3}, "'query' must be a string"),
        ({"query": "x", "limit": "5"}, "'limit' must be an integer"),
        ({"query": "x", "limit": True}, "'limit' must be an integer"),
        ({"query": "x", "sort": "random"}, "must be one of ['new', 'old']"),
        ("not a dict", "arguments must be a JSON object"),
    ]
    for args, message in cases:
        with pytest.raises(ToolArgumentError) as e:
            search.call(args)
        assert message in str(e.value)


def test_method_tools_hide_self():
    class Box:
        @tool
        def put(self, item: str) -> str:
            """Put an item in the box."""
            return f"put {item}"

    assert list(Box.put.parameters["properties"]) == ["item"]
    assert Box.put.call({"item": "pen"}, owner=Box()) == "put pen"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@tool
def paint(
    colour: Colour,
    size: Optional[int] = None,  # noqa: UP045 - the typing spelling must work too
    layers: list[int] | None = None,
    weights: dict[str, float] | None = None,
    at: tuple[int, str] = (0, "x"),
    alpha: float = 1.0,
) -> str:
    return f"{colour!r}|{size}|{layers}|{weights}|{at!r}|{alpha}"


def test_optional_enum_and_container_types():
    props = paint.parameters["properties"]
    assert props["colour"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["size"] == {"type": "integer", "nullable": True}
    assert props["layers"] == {"type": "array", "items": {"type": "integer"}, "nullable": True}
    assert props["weights"]["additionalProperties"] == {"type": "number"}
    assert props["at"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    # an explicit null for an Optional argument, an enum value converted to its member, a tuple
    assert paint.call({"colour": "blue", "size": None, "at": [2, "y"]}) == (
        "<Colour.BLUE: 'blue'>|None|None|None|(2, 'y')|1.0"
    )
    cases = [
        ({"colour": "green"}, "must be one of ['red', 'blue']"),
        ({"colour": "red", "layers": [1, "x"]}, "'layers[1]' must be an integer"),
        ({"colour": "red", "weights": {"a": "heavy"}}, "must be a finite number"),
        ({"colour": "red", "at": [1]}, "'at' must be a list of 2 items"),
        ({"colour": "red", "alpha": float("nan")}, "'alpha' must be a finite number"),
        ({"colour": None}, "must be one of"),
    ]
    for args, message in cases:
        with pytest.raises(ToolArgumentError) as e:
            paint.call(args)
        assert message in str(e.value), (args, str(e.value))


def test_undocumented_untyped_tool():
    @tool
    def echo(x, y=2):
        return x

    assert echo.schema["function"]["description"] == ""
    assert echo.parameters == {"type": "object", "properties": {"x": {}, "y": {}}, "required": ["x"]}
    assert echo.call({"x": [1, {"a": None}]}) == [1, {"a": None}]


def test_async_tool():
    @tool
    async def later(x: int) -> int:
        """Add one, eventually."""
        await asyncio.sleep(0)
        return x + 1

    assert later.is_async and not paint.is_async
    assert asyncio.run(later.acall({"x": 1})) == 2
    assert later.call_blocking({"x": 2}) == 3

    async def inside_a_loop():
        return later.call_blocking({"x": 3})  # runs on a helper thread's loop

    assert asyncio.run(inside_a_loop()) == 4
