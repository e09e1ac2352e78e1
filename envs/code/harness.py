"""The test harness that runs INSIDE a sandbox (standard library only), in separate stages.

Stage ``calls`` (untrusted: the submission is loaded) imports the submitted module and evaluates
each test's calls of the entry point -- only the calls with their arguments, never the rest of
the assertion, so the expected values are not in this process. Each return value (or the name of
the exception raised) is encoded with exact built-in types only and written, one JSON line per
call, to the result channel (the file descriptor in ``AGENTGYM_CHANNEL_FD``, not stdout).

Stage ``check`` (trusted: no submitted file exists in its sandbox) rebuilds those values and
evaluates each full assertion with every call replaced by its recorded value.

A check program (a benchmark's ``check(candidate)`` with imports, loops, helpers and randomness)
runs as written in stage ``program``, also without the submission: its calls of ``candidate``
are answered from values computed in stage ``apply`` (untrusted), which is given only the
argument lists. The two alternate until the program has had every answer it asks for.

Whatever the submission does to this process (patch the harness, write fake lines, exit early),
all it can ever claim is what its function returned; the comparison happens where it cannot
reach. The host side is ``agentgym.envs.code.grading``.

>>> decode(encode({"a": (1, 2.5, None)}))
{'a': (1, 2.5, None)}
>>> decode(["other", "Sneaky"]) == decode(["other", "Sneaky"])
False
"""

import builtins
import importlib
import json
import os
import signal
import sys

MAX_DEPTH = 60


class Opaque:
    """A value of a type the channel does not carry: unequal to everything, itself included."""

    def __init__(self, type_name):
        self.type_name = str(type_name)[:100]

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{self.type_name} object>"


_SEQ = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
_SEQ_BACK = {v: k for k, v in _SEQ.items()}


def encode(value, depth=0):
    """A JSON-able form of ``value`` that keeps exact built-in types; other types become opaque."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None:
        return ["none"]
    if t is bool:
        return ["bool", value]
    if t is int:
        return ["int", str(value)]
    if t is float:
        return ["float", repr(value)]
    if t is str:
        return ["str", value]
    if t is bytes:
        return ["bytes", value.hex()]
    if t in _SEQ:
        return [_SEQ[t], [encode(x, depth + 1) for x in value]]
    if t is dict:
        return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    return ["other", t.__name__]


def decode(obj, depth=0):
    """Rebuild a value from ``encode``'s form; raises ``ValueError`` on anything malformed."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise ValueError("malformed value")
    tag = obj[0]
    arg = obj[1] if len(obj) == 2 else None
    if tag == "none" and len(obj) == 1:
        return None
    if tag == "bool" and isinstance(arg, bool):
        return arg
    if tag == "int" and isinstance(arg, str) and len(arg) <= 4000:
        return int(arg)
    if tag == "float" and isinstance(arg, str) and len(arg) <= 40:
        return float(arg)
    if tag == "str" and isinstance(arg, str):
        return arg
    if tag == "bytes" and isinstance(arg, str):
        return bytes.fromhex(arg)
    if tag in _SEQ_BACK and isinstance(arg, list):
        return _SEQ_BACK[tag](decode(x, depth + 1) for x in arg)
    if tag == "dict" and isinstance(arg, list):
        out = {}
        for pair in arg:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("malformed dict item")
            out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        return out
    if tag == "other" and isinstance(arg, str):
        return Opaque(arg)
    raise ValueError(f"malformed value tagged {tag[:20]!r}")


class TestTimeout(BaseException):
    """A test ran past its time budget."""


class Missing(BaseException):
    """A call has no recorded value (the submission died or never answered)."""


_alarms = [0]
"""how many times a test's time ran out: a call that swallows its ``TestTimeout`` still timed out"""


def _on_alarm(signum, frame):
    _alarms[0] += 1
    raise TestTimeout()


def _open_channel():
    fd = int(os.environ.pop("AGENTGYM_CHANNEL_FD"))
    chan = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8")
    if fd == 1:  # the channel is stdout (docker): the program's own prints go to stderr
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    else:
        os.close(fd)
    return chan


def _sender(job, chan):
    """Writes one record to the channel, stamped with this run's nonce."""

    def send(record):
        record["n"] = job["nonce"]
        chan.write(json.dumps(record) + "\n")

    return send


def _entry_point(job, send):
    """The submitted function, or None once the import error has been sent."""
    sys.path.insert(0, "/work")
    try:
        module = importlib.import_module(job["module"])
        return getattr(module, job["entry_point"])
    except BaseException as e:
        send({"import_error": f"{type(e).__name__}: {e}"[:500]})
        return None


def _timed(thunk, timeout):
    """Run ``thunk`` under a time limit: ``(value, record)``, where the record carries the encoded
    value, or the name of what it raised (``Timeout`` when the time ran out, even if caught)."""
    alarms = _alarms[0]
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        value = thunk()
        signal.setitimer(signal.ITIMER_REAL, 0)
        if _alarms[0] != alarms:
            raise TestTimeout()
    except BaseException as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        name = "Timeout" if isinstance(e, TestTimeout) else type(e).__name__
        return None, {"raised": name, "msg": str(e)[:200]}
    try:
        return value, {"v": encode(value)}
    except (ValueError, RecursionError):
        return value, {"v": ["other", type(value).__name__]}


def run_calls(job, chan):
    """Stage ``calls``: evaluate every call of the entry point, streaming the values."""
    send = _sender(job, chan)
    fn = _entry_point(job, send)
    if fn is None:
        return
    ns = {"__name__": "agentgym_tests"}
    exec(job.get("setup") or "", ns)
    ns[job["entry_point"]] = fn
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, sites in enumerate(job["tests"]):
        values = {}
        ns["__V"] = values.__getitem__
        for j, site in enumerate(sites):
            value, record = _timed(lambda site=site: eval(site, ns), job["test_timeout"])
            send({"t": i, "c": j, **record})
            if "raised" in record:
                break
            values[j] = value
    send({"done": True})


def _exception_class(name):
    """A class to re-raise a recorded exception: the built-in one (a stand-in outside ``Exception``
    for ``SystemExit``, ``KeyboardInterrupt`` and the like), or a new ``Exception`` subclass."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        if issubclass(cls, Exception):
            return cls
        return type(name, (BaseException,), {})
    return type(str(name)[:100], (Exception,), {})


def raises(exc_type, fn):
    """True when ``fn()`` raises ``exc_type``: tests write ``assert raises(ValueError, lambda: f(-1))``."""
    try:
        fn()
    except exc_type:
        return True
    return False


def run_checks(job, chan):
    """Stage ``check``: evaluate each assertion with the recorded values of its calls."""
    setup_ns = {"__name__": "agentgym_tests", "raises": raises}
    exec(job.get("setup") or "", setup_ns)
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, test in enumerate(job["tests"]):
        recorded = test["values"]
        absent = []

        def value_of(j, recorded=recorded, absent=absent):
            rec = recorded.get(str(j))
            if rec is None or rec.get("raised") == "Timeout":
                absent.append(j)  # no value: the test fails, whatever the assertion makes of it
                raise Missing()
            if "raised" in rec:
                raise _exception_class(rec["raised"])(rec.get("msg", ""))
            return decode(rec["v"])

        ns = dict(setup_ns)
        ns["__V"] = value_of
        signal.setitimer(signal.ITIMER_REAL, job["test_timeout"])
        try:
            exec(test["code"], ns)
            signal.setitimer(signal.ITIMER_REAL, 0)
            result = {"t": i, "pass": not absent, "error": "Missing" if absent else ""}
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            result = {"t": i, "pass": False, "error": type(e).__name__}
        chan.write(json.dumps(result) + "\n")
    chan.write(json.dumps({"done": True}) + "\n")


def run_apply(job, chan):
    """Stage ``apply`` (untrusted): call the entry point on each argument list the check program
    asked for (``[args, kwargs]`` in ``encode``'s form), streaming the values."""
    send = _sender(job, chan)
    fn = _entry_point(job, send)
    if fn is None:
        return
    signal.signal(signal.SIGALRM, _on_alarm)
    for k, call in enumerate(job["apply"]):
        args, kwargs = decode(call)
        _, record = _timed(lambda args=args, kwargs=kwargs: fn(*args, **kwargs), job["test_timeout"])
        send({"k": k, **record})
    send({"done": True})


class Probe:
    """Stands for a return value not known yet, while a check program is run ahead to find the
    calls it makes: it passes every comparison, and any operation on it gives a probe again."""

    def _same(self, *args, **kwargs):
        return self

    def _true(self, other):
        return True

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _true
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _same
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = __round__ = __getitem__ = __call__ = _same
    __hash__ = object.__hash__

    def __bool__(self):
        return True

    def __float__(self):
        return 0.0

    def __int__(self):
        return 0

    __index__ = __int__

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())

    def __getattr__(self, name):
        return self


class Stop(BaseException):
    """Ends a probing run: the next call cannot be known or sent yet."""


def _carries(obj):
    """True when ``encode``'s form holds no opaque value (the channel can carry it exactly)."""
    if isinstance(obj, list):
        if len(obj) == 2 and obj[0] == "other" and isinstance(obj[1], str):
            return False
        return all(_carries(x) for x in obj)
    return True


def _soft_asserts(source):
    """``source`` with each ``assert T, M`` as ``__agentgym_assert(T, lambda: M)``: the same
    check, except that while probing a failed assertion does not end the run."""
    import ast

    class Soften(ast.NodeTransformer):
        def visit_Assert(self, node):
            message = node.msg if node.msg is not None else ast.Constant("")
            call = ast.Call(
                ast.Name("__agentgym_assert", ast.Load()),
                [node.test, ast.Lambda(ast.arguments([], [], None, [], [], None, []), message)],
                [],
            )
            return ast.copy_location(ast.Expr(call), node)

    return ast.fix_missing_locations(Soften().visit(ast.parse(source)))


def run_program(job, chan):
    """Stage ``program`` (trusted: no submitted file exists in its sandbox): run the task's check
    program as written, ``check(candidate)``, where ``candidate`` answers from the calls already
    made in the ``apply`` stage. At the first call with no answer yet the run goes on with probes
    in place of values, to collect the calls that follow, and ends with ``{"keep", "need"}``; when
    every call had its answer, it ends with the verdict ``{"pass", "error"}``."""
    import random

    known = job["known"]
    need = []
    state = {"i": 0, "probing": False, "keep": len(known)}

    def candidate(*args, **kwargs):
        call = encode([list(args), dict(kwargs)])
        if not _carries(call):
            if state["probing"]:
                raise Stop()
            raise TypeError("check() passed candidate a value the channel cannot carry")
        i = state["i"]
        state["i"] += 1
        if not state["probing"] and i < len(known):
            if known[i]["a"] == call:
                rec = known[i]["r"]
                if "v" in rec:
                    return decode(rec["v"])
                if rec.get("raised") in (None, "Timeout"):
                    raise Missing()
                raise _exception_class(rec["raised"])(rec.get("msg", ""))
            state["keep"] = i  # the calls from here on differ from the ones answered before
        state["probing"] = True
        need.append(call)
        if len(need) >= job["max_calls"]:
            raise Stop()
        return Probe()

    def check_assert(ok, message):
        if not ok and not state["probing"]:  # a probed value decides nothing: run on to the next call
            raise AssertionError(message())

    ns = {"__name__": "agentgym_check", "__agentgym_assert": check_assert}
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, job["timeout"])
    error = ""
    try:
        random.seed(job["seed"])
        exec(job.get("setup") or "", ns)
        exec(compile(_soft_asserts(job["program"]), "<check program>", "exec"), ns)
        ns["check"](candidate)
    except BaseException as e:
        error = type(e).__name__
    signal.setitimer(signal.ITIMER_REAL, 0)
    if state["probing"]:
        chan.write(json.dumps({"keep": state["keep"], "need": need}) + "\n")
    else:
        chan.write(json.dumps({"pass": not error, "error": error, "calls": state["i"]}) + "\n")
    chan.write(json.dumps({"done": True}) + "\n")


def main():
    chan = _open_channel()
    with open(sys.argv[2], encoding="utf-8") as f:
        job = json.load(f)
    sys.setrecursionlimit(3000)
    stage = {"calls": run_calls, "apply": run_apply, "program": run_program}.get(sys.argv[1], run_checks)
    stage(job, chan)
    chan.flush()


if __name__ == "__main__":
    main()
