import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from agentgym.parsing import MAX_ERRORS, format_tool_call, parse_tool_calls, strip_tool_calls


def test_hermes_calls_and_errors():
    text = (
        "Let me look.\n<tool_call>\n"
        '{"name": "search", "arguments": {"q": "tea"}}\n</tool_call>\n'
        '<tool_call>{"name": "open", "arguments": "{\\"id\\": 3}"}</tool_call>'
        "<tool_call>{oops}</tool_call>"
        '<tool_call>{"arguments": {}}</tool_call>'
    )
    r = parse_tool_calls(text)
    assert [c["function"]["name"] for c in r.tool_calls] == ["search", "open"]
    assert json.loads(r.tool_calls[1]["function"]["arguments"]) == {"id": 3}
    assert len(r.errors) == 2
    assert r.errors[0].startswith("tool call 3 is not valid JSON")
    assert r.errors[1] == "tool call 4 has no 'name' string"


def test_unclosed_tag_from_truncated_generation():
    r = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}')
    assert [c["function"]["name"] for c in r.tool_calls] == ["a"]
    assert parse_tool_calls('<tool_call>{"name": "a", "argu').errors


def test_plain_json_formats():
    one = parse_tool_calls('{"name": "add", "arguments": {"a": 1, "b": 2}}', "json")
    assert one.tool_calls[0]["function"]["name"] == "add"
    many = parse_tool_calls('```json\n[{"name": "a", "arguments": {}}, {"name": "b"}]\n```')
    assert [c["function"]["name"] for c in many.tool_calls] == ["a", "b"]
    assert parse_tool_calls('{"answer": 4}').tool_calls == []  # JSON, but not a tool call
    assert parse_tool_calls("The answer is 4.").tool_calls == []
    assert parse_tool_calls('{"name": "x", "arguments": [1]}').errors == [
        "tool call 1 must have 'arguments' as a JSON object"
    ]
    # hermes format ignores bare JSON; json format ignores tags
    assert parse_tool_calls('{"name": "add", "arguments": {}}', "hermes").tool_calls == []


def test_format_round_trip_and_strip():
    text = "Sure. " + format_tool_call("move", {"action": "x3"})
    r = parse_tool_calls(text)
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == {"action": "x3"}
    assert strip_tool_calls(text) == "Sure."


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=3000), st.sampled_from(["auto", "hermes", "json"]))
def test_arbitrary_text_never_raises(text, fmt):
    r = parse_tool_calls(text, fmt)
    assert isinstance(r.tool_calls, list) and isinstance(r.errors, list)


pieces = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        "[",
        "]",
        '"name"',
        ":",
        ",",
        '"arguments"',
        '"x"',
        "\\",
        "```",
        "\n",
        " ",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=300))
def test_adversarial_fragments_never_raise(parts):
    parse_tool_calls("".join(parts))


def test_huge_and_nested_inputs_finish_fast():
    nasty = [
        "<tool_call>" * 20000,
        "[" * 100000,
        "<tool_call>" + "[" * 100000 + "</tool_call>",
        '{"name": "a", "arguments": ' + "[" * 50000 + "}",
        "{" * 50000,
        "x" * 1_000_000,
    ]
    for text in nasty:
        t0 = time.perf_counter()
        parse_tool_calls(text)
        assert time.perf_counter() - t0 < 2.0


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=200).filter(lambda s: "<tool_call>" not in s),
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20), st.booleans()), max_size=4
    ),
)
def test_calls_embedded_in_prose_are_recovered(prose, name, args):
    r = parse_tool_calls(prose + format_tool_call(name, args) + prose)
    assert [c["function"]["name"] for c in r.tool_calls] == [name]
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == args


def test_closing_tag_inside_a_json_string():
    code = 'print("</tool_call>")'
    text = format_tool_call("write", {"path": "a.py", "text": code}) + " then " + format_tool_call("run", {})
    r = parse_tool_calls(text)
    assert [c["function"]["name"] for c in r.tool_calls] == ["write", "run"] and r.errors == []
    assert r.arguments[0]["text"] == code


def test_nan_and_infinity_are_not_json():
    for text in (
        '<tool_call>{"name": "a", "arguments": {"x": NaN}}</tool_call>',
        '<tool_call>{"name": "a", "arguments": {"s": "</tool_call>", "x": Infinity}}</tool_call>',
        '{"name": "a", "arguments": "{\\"x\\": -Infinity}"}',
    ):
        r = parse_tool_calls(text)
        assert r.tool_calls == [] and len(r.errors) == 1, (text, r)


def test_many_malformed_calls_are_counted_not_listed():
    r = parse_tool_calls("<tool_call>{</tool_call>" * 1000 + format_tool_call("ok", {}))
    assert [c["function"]["name"] for c in r.tool_calls] == ["ok"]
    assert (
        len(r.errors) == MAX_ERRORS + 1
        and r.errors[-1] == f"{1000 - MAX_ERRORS} more malformed tool calls (not shown)"
    )


def test_megabyte_replies_parse_in_linear_time():
    def seconds(text):
        t0 = time.perf_counter()
        parse_tool_calls(text)  # auto: '{' takes the JSON path, tags the hermes one
        return time.perf_counter() - t0

    for unit in ("{", "<tool_call>", "<tool_call></tool_call>", '<tool_call>{"a": "</tool_call>'):
        small, big = unit * (125_000 // len(unit)), unit * (1_000_000 // len(unit))
        # distinct strings each time, so the parser's cache never answers
        t_small = min(seconds(small + " " * i) for i in (1, 2))
        t_big = min(seconds(big + " " * i) for i in (1, 2))
        # 8x the input: a quadratic scan would take 64x as long
        assert t_big < 5.0 and t_big < 24 * t_small + 0.05, (unit, t_small, t_big)
