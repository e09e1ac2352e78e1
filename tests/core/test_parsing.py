import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from agentgym.parsing import (
    FORMATS,
    MAX_ERRORS,
    detect_format,
    format_tool_call,
    parse_tool_calls,
    strip_tool_calls,
)


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
@given(st.text(max_size=3000), st.sampled_from(FORMATS))
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
        "[TOOL_CALLS]",
        "[ARGS]",
        "<|python_tag|>",
        ";",
        '"parameters"',
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=300), st.sampled_from(FORMATS))
def test_adversarial_fragments_never_raise(parts, fmt):
    text = "".join(parts)
    r = parse_tool_calls(text, fmt)
    assert len(r.tool_calls) == len(r.arguments) and len(r.errors) <= MAX_ERRORS + 1
    assert isinstance(strip_tool_calls(text, fmt), str)


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
    # the prose between and after the calls survives; no piece of a call's arguments leaks into it
    assert strip_tool_calls(f"Writing. {text} Done.") == "Writing.  then  Done."
    # the opening tag inside a string too (a parser the agent writes for this very format)
    code = 'if s.startswith("<tool_call>"): s = s.split("</tool_call>")[0]'
    text = format_tool_call("write", {"text": code}) + " then " + format_tool_call("run", {})
    r = parse_tool_calls(text)
    assert [c["function"]["name"] for c in r.tool_calls] == ["write", "run"] and r.errors == []
    assert r.arguments[0]["text"] == code and strip_tool_calls(text) == "then"


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=100).filter(lambda s: "<tool_call>" not in s),
    st.lists(
        st.lists(
            st.sampled_from(["</tool_call>", "<tool_call>", "<", ">", "a", '"', "\\", " "]), max_size=8
        ).map("".join),
        max_size=4,
    ),
)
def test_strip_leaves_exactly_the_prose_whatever_the_arguments_hold(prose, values):
    calls = "".join(format_tool_call("w", {"s": v}) for v in values)
    assert strip_tool_calls(prose + calls + prose) == (prose + prose).strip()


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

    for unit in (
        "{",
        "<tool_call>",
        "<tool_call></tool_call>",
        '<tool_call>{"a": "</tool_call>',
        '<tool_call>{"a": "<tool_call></tool_call>',
    ):
        small, big = unit * (125_000 // len(unit)), unit * (1_000_000 // len(unit))
        # distinct strings each time, so the parser's cache never answers
        t_small = min(seconds(small + " " * i) for i in (1, 2))
        t_big = min(seconds(big + " " * i) for i in (1, 2))
        # 8x the input: a quadratic scan would take 64x as long
        assert t_big < 5.0 and t_big < 24 * t_small + 0.05, (unit, t_small, t_big)


def test_llama3_json_calls():
    one = parse_tool_calls('{"name": "add", "parameters": {"a": 1}}', "llama3_json")
    assert [c["function"]["name"] for c in one.tool_calls] == ["add"] and one.arguments == [{"a": 1}]
    tagged = (
        'Let me add. <|python_tag|>{"name": "add", "parameters": {"a": 1}}; {"name": "neg", "parameters": {}}'
    )
    r = parse_tool_calls(tagged)  # auto: the tag says llama3_json
    assert [c["function"]["name"] for c in r.tool_calls] == ["add", "neg"] and r.errors == []
    assert strip_tool_calls(tagged) == "Let me add."
    assert parse_tool_calls("The answer is 4.", "llama3_json").tool_calls == []
    assert parse_tool_calls('{"answer": 4}', "llama3_json").errors == []  # JSON, but not a call
    assert parse_tool_calls('{"name": "add", "parameters": {}} and then', "llama3_json").errors == [
        "text after tool call 1 at char 34 (join several calls with ';')"
    ]
    assert (
        parse_tool_calls('<|python_tag|>{"name": "add", ', "llama3_json")
        .errors[0]
        .startswith("tool call 1 is not valid JSON")
    )


def test_mistral_calls():
    text = 'Adding. [TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}, {"name": "neg", "arguments": "{}"}]'
    r = parse_tool_calls(text)  # auto: the marker says mistral
    assert [c["function"]["name"] for c in r.tool_calls] == ["add", "neg"] and r.arguments == [{"a": 1}, {}]
    assert strip_tool_calls(text) == "Adding."
    newer = parse_tool_calls('[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]neg[ARGS]{}', "mistral")
    assert [c["function"]["name"] for c in newer.tool_calls] == ["add", "neg"] and newer.errors == []
    assert parse_tool_calls("[TOOL_CALLS]add", "mistral").errors == [
        "tool call 1 has neither a JSON list nor a name and [ARGS]"
    ]
    assert (
        parse_tool_calls('[TOOL_CALLS][{"name": "a"', "mistral")
        .errors[0]
        .startswith("tool call 1 is not valid JSON")
    )
    assert parse_tool_calls('[TOOL_CALLS][{"name": "a", "arguments": {"x": NaN}}]').tool_calls == []
    # a format finds nothing in another format's calls
    assert parse_tool_calls(format_tool_call("add", {}), "mistral").tool_calls == []
    assert parse_tool_calls(format_tool_call("add", {}, "mistral"), "hermes").tool_calls == []


def test_auto_reads_each_format_by_its_marker():
    for fmt in ("hermes", "mistral", "llama3_json", "json"):
        text = format_tool_call("add", {"a": 1}, fmt)
        if fmt == "llama3_json":
            text = "<|python_tag|>" + text
        assert detect_format(text) == fmt
        r = parse_tool_calls(text)
        assert [c["function"]["name"] for c in r.tool_calls] == ["add"] and r.arguments == [{"a": 1}], fmt


_prose = st.text(max_size=200).filter(
    lambda s: not any(m in s for m in ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"))
)
_args = st.dictionaries(
    st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20), st.booleans()), max_size=4
)


@settings(max_examples=200, deadline=None)
@given(
    _prose, st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _args), min_size=1, max_size=3)
)
def test_mistral_calls_after_prose_are_recovered(prose, calls):
    body = ", ".join(format_tool_call(n, a, "json") for n, a in calls)
    for fmt in ("mistral", "auto"):
        text = f"{prose}[TOOL_CALLS][{body}]"
        r = parse_tool_calls(text, fmt)
        assert [(c["function"]["name"], a) for c, a in zip(r.tool_calls, r.arguments, strict=True)] == calls
        assert r.errors == [] and strip_tool_calls(text, fmt) == prose.strip()


@settings(max_examples=200, deadline=None)
@given(
    _prose, st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _args), min_size=1, max_size=3)
)
def test_llama3_calls_are_recovered_bare_or_after_the_tag(prose, calls):
    body = "; ".join(format_tool_call(n, a, "llama3_json") for n, a in calls)
    for text in (body, f"{prose}<|python_tag|>{body}"):
        r = parse_tool_calls(text, "llama3_json")
        assert [(c["function"]["name"], a) for c, a in zip(r.tool_calls, r.arguments, strict=True)] == calls
        assert r.errors == []
    assert strip_tool_calls(f"{prose}<|python_tag|>{body}") == prose.strip()


def test_new_formats_parse_megabytes_in_linear_time():
    def seconds(text, fmt):
        t0 = time.perf_counter()
        parse_tool_calls(text, fmt)
        return time.perf_counter() - t0

    for unit, fmt in (
        ("[TOOL_CALLS]", "mistral"),
        ("[TOOL_CALLS][", "mistral"),
        ('[TOOL_CALLS]["', "mistral"),
        ("[TOOL_CALLS]a[ARGS]{", "mistral"),
        ('{"name": "a", "parameters": {}};', "llama3_json"),
        ("<|python_tag|>{", "llama3_json"),
        (";", "llama3_json"),
    ):
        small, big = unit * (125_000 // len(unit)), unit * (1_000_000 // len(unit))
        t_small = min(seconds(small + " " * i, fmt) for i in (1, 2, 3))
        t_big = min(seconds(big + " " * i, fmt) for i in (1, 2, 3))
        assert t_big < 5.0 and t_big < 24 * t_small + 0.05, (unit, t_small, t_big)
