from typing import Literal

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
