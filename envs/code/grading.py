"""Grading a submission against assertion tests, so that nothing it runs can forge the result.

A test is one ``assert`` statement, e.g. ``assert add(2, 3) == 5`` or
``assert raises(ValueError, lambda: parse(""))``. ``compile_test`` splits it: every call of the
entry point becomes a *site* (``add(2, 3)``), and the assertion becomes a *check* with each site
replaced by ``__V(j)`` (``assert __V(0) == 5``). Grading then runs two sandboxes:

1. ``calls``: a fresh sandbox holding only the submitted files evaluates the sites and streams the
   values over a pipe (not stdout). It never sees a check, so it never sees an expected value.
2. ``check``: another fresh sandbox, with no submitted file, evaluates the checks on those values.

A submission that patches the harness, prints fake lines, writes fake files, exits early or
leaves a daemon behind can at most claim return values; a call it claims twice fails, a call it
never answers fails, a value of a type the channel does not carry is unequal to everything.

>>> t = compile_test("assert add(add(1, 2), 3) == 6", "add")
>>> t.sites, t.check
(['add(1, 2)', 'add(__V(0), 3)'], 'assert __V(1) == 6')
"""

from __future__ import annotations

import ast
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from agentgym.envs.code.harness import decode
from agentgym.envs.code.sandbox import Limits, RunResult, Sandbox, SandboxError

HARNESS = "/opt/agentgym/harness.py"
JOB = "/opt/agentgym/job.json"
MAX_VALUES = 8 << 20
"""bytes of recorded values (as JSON lines) passed on to the check stage, all calls together (less
where the check sandbox carries less, ``Sandbox.max_input_bytes``): a record over it is dropped,
and once the total passes it the values recorded later are opaque (they fail), so a flood of
values neither slows the grader nor outgrows the check stage's input"""
TOO_LARGE = ["other", "value past the size limit"]


class TestFormatError(ValueError):
    """A test is not a single ``assert`` the grader can split; the message says how to write it."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class CompiledTest:
    source: str
    sites: list[str]
    """each call of the entry point, inner calls replaced by ``__V(k)``"""
    check: str
    """the assertion with every site replaced by ``__V(j)``"""


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            names |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Lambda):
            a = node.args
            names |= {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]}
            names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
        elif isinstance(node, ast.NamedExpr):
            names.add(node.target.id)
    return names


def compile_test(source: str, entry_point: str) -> CompiledTest:
    """Split one assertion into its calls of ``entry_point`` and the check on their values."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError as e:
        raise TestFormatError(f"test {source!r} is not valid Python: {e.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise TestFormatError(
            f"a test must be one assert statement, e.g. 'assert {entry_point}(1) == 2'; got {source!r}"
        )
    bound = _bound_names(tree)
    sites: list[str] = []

    class Split(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            if isinstance(node.func, ast.Name) and node.func.id == entry_point:
                free = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & bound
                if free:
                    raise TestFormatError(
                        f"test {source!r} calls {entry_point} with {sorted(free)} bound inside the test "
                        "(a comprehension or lambda argument); write one assert per call"
                    )
                sites.append(ast.unparse(node))
                return ast.Call(ast.Name("__V", ast.Load()), [ast.Constant(len(sites) - 1)], [])
            return node

    new = Split().visit(tree)
    for node in ast.walk(new):
        if isinstance(node, ast.Name) and node.id == entry_point:
            raise TestFormatError(
                f"test {source!r} uses {entry_point} other than by calling it; call it directly"
            )
    return CompiledTest(source=source.strip(), sites=sites, check=ast.unparse(new))


@dataclass
class TestOutcome:
    __test__ = False
    source: str
    passed: bool
    detail: str = ""
    """why it failed, or what the calls returned"""


@dataclass
class GradeResult:
    outcomes: list[TestOutcome] = field(default_factory=list)
    error: str | None = None
    """an infrastructure failure (the sandbox, not the submission): the score means nothing"""
    import_error: str | None = None
    calls_run: RunResult | None = None

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def score(self) -> float:
        return self.passed / self.total if self.outcomes else 0.0


def _short(value: object, n: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def read_values(channel: bytes, nonce: str, key_of, budget: int = MAX_VALUES) -> tuple[dict, str | None]:
    """Read an untrusted stage's value records: ``{key: record}`` for the well-formed, single
    records with this run's nonce whose ``key_of(record)`` is a key (not None); a key recorded
    twice is dropped (its call then fails), and values past ``budget`` bytes in all are replaced by
    an opaque one (they fail too). Also returns the import error the stage reported, if any."""
    seen: dict = {}
    dup: set = set()
    import_error = None
    total = 0
    for line in channel.split(b"\n"):
        if not line.strip() or len(line) > budget:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(rec, dict) or rec.get("n") != nonce:
            continue
        if "import_error" in rec:
            import_error = str(rec["import_error"])[:500]
            continue
        key = key_of(rec)
        if key is None:
            continue
        if "v" in rec:
            try:
                decode(rec["v"])
            except (ValueError, TypeError, RecursionError):
                continue
            total += len(line)
            clean = {"v": rec["v"] if total <= budget else TOO_LARGE}
        elif isinstance(rec.get("raised"), str):
            clean = {"raised": rec["raised"][:100], "msg": str(rec.get("msg", ""))[:200]}
        else:
            continue
        if key in seen:
            dup.add(key)
        seen[key] = clean
    for key in dup:
        del seen[key]
    return seen, import_error


def parse_calls(
    channel: bytes, nonce: str, tests: list[CompiledTest], budget: int = MAX_VALUES
) -> tuple[dict, str | None]:
    """The ``calls`` stage's records: ``{(test, call): record}`` (see ``read_values``)."""

    def key_of(rec):
        t, c = rec.get("t"), rec.get("c")
        if type(t) is int and type(c) is int and 0 <= t < len(tests) and 0 <= c < len(tests[t].sites):
            return (t, c)
        return None

    return read_values(channel, nonce, key_of, budget)


def grade(
    files: dict[str, bytes],
    tests: list[CompiledTest],
    *,
    entry_point: str,
    new_sandbox,
    setup: str = "",
    module: str = "solution",
    limits: Limits | None = None,
    test_timeout: float = 5.0,
    calls_sandbox: Sandbox | None = None,
    program: str = "",
    seed: int = 0,
) -> GradeResult:
    """Grade ``files`` on ``tests``, then on the check ``program`` when there is one.

    Args:
        files: the submitted files (the only files the ``calls`` and ``apply`` stages see).
        tests: compiled assertions (may be empty).
        entry_point: the function under test, looked up in ``module``.
        new_sandbox: a callable returning a fresh ``Sandbox`` session.
        setup: task code run before the tests in both stages (visible to the submission).
        module: the module the entry point is imported from.
        limits: limits of the ``calls`` and ``apply`` stages.
        test_timeout: seconds each call (and each check) may take.
        calls_sandbox: run the ``calls`` stage in this session instead of a fresh one (the visible
            tests the agent runs; never for the final score).
        program: a check program defining ``check(candidate)``, run as written (one more test;
            see ``_grade_program``).
        seed: the seed of ``random`` in the check program.
    """
    result = GradeResult()
    if tests:
        result = _grade_asserts(
            files, tests, entry_point, new_sandbox, setup, module, limits, test_timeout, calls_sandbox
        )
    if program and result.error is None:
        outcome = _grade_program(
            files, program, entry_point, new_sandbox, setup, module, limits, test_timeout, seed
        )
        if isinstance(outcome, str):
            result.error = outcome
        else:
            result.outcomes.append(outcome)
    return result


def _grade_asserts(
    files, tests, entry_point, new_sandbox, setup, module, limits, test_timeout, calls_sandbox
):
    """The ``calls`` and ``check`` stages (see the module docstring)."""
    harness = Path(__file__).with_name("harness.py").read_bytes()
    nonce = secrets.token_hex(16)
    result = GradeResult()
    calls_job = {
        "nonce": nonce,
        "module": module,
        "entry_point": entry_point,
        "setup": setup,
        "tests": [t.sites for t in tests],
        "test_timeout": test_timeout,
    }
    argv = ["python", "-I", "-B", HARNESS]
    box = calls_sandbox or new_sandbox()
    try:
        if calls_sandbox is None:
            for path, data in files.items():
                box.write_file(path, data)
        run = box.run(
            [*argv, "calls", JOB],
            limits=limits,
            readonly_files={HARNESS: harness, JOB: json.dumps(calls_job).encode()},
        )
    except SandboxError as e:
        result.error = f"calls stage: {e}"
        return result
    finally:
        if calls_sandbox is None:
            box.close()
    result.calls_run = run
    check_box = new_sandbox()
    budget = min(MAX_VALUES, check_box.max_input_bytes - len(harness) - (64 << 10))
    values, result.import_error = parse_calls(run.channel, nonce, tests, budget)
    check_job = {
        "setup": setup,
        "test_timeout": test_timeout,
        "tests": [
            {"code": t.check, "values": {str(c): v for (ti, c), v in values.items() if ti == i}}
            for i, t in enumerate(tests)
        ],
    }
    try:
        check = check_box.run(
            [*argv, "check", JOB],
            limits=Limits(timeout=max(10.0, 2 * test_timeout * len(tests)), memory_mb=1024),
            readonly_files={HARNESS: harness, JOB: json.dumps(check_job).encode()},
        )
    except SandboxError as e:
        result.error = f"check stage: {e}"
        return result
    finally:
        check_box.close()
    verdicts: dict[int, dict] = {}
    done = False
    for line in check.channel.decode(errors="replace").splitlines():
        rec = json.loads(line)
        if rec.get("done"):
            done = True
        elif isinstance(rec.get("t"), int):
            verdicts[rec["t"]] = rec
    if not done or len(verdicts) != len(tests):
        result.error = (
            f"check stage ended early (exit {check.exit_code}, limit {check.limit}): {check.stderr[-500:]}"
        )
        return result
    for i, t in enumerate(tests):
        verdict = verdicts[i]
        detail = ""
        if not verdict["pass"]:
            detail = _explain(t, i, values, result.import_error, run, verdict.get("error", ""))
        result.outcomes.append(TestOutcome(source=t.source, passed=bool(verdict["pass"]), detail=detail))
    return result


def _explain(
    test: CompiledTest, i: int, values: dict, import_error: str | None, run: RunResult, error: str
) -> str:
    if import_error:
        return f"importing the solution failed: {import_error}"
    parts = []
    for j, site in enumerate(test.sites):
        rec = values.get((i, j))
        shown = site
        for k in range(j):
            shown = shown.replace(f"__V({k})", test.sites[k])
        if rec is None:
            why = {"timeout": "the run timed out", "memory": "the run ran out of memory"}.get(
                run.limit or "", ""
            )
            parts.append(
                f"{shown} gave no result" + (f" ({why})" if why else " (the process died or never got there)")
            )
            break
        if "raised" in rec:
            parts.append(f"{shown} raised {rec['raised']}: {rec['msg']}".rstrip(": "))
            break
        parts.append(f"{shown} returned {_short(decode(rec['v']))}")
    return "; ".join(parts) or f"the assertion failed ({error})"


MAX_ROUNDS = 32
"""apply/program alternations before a check program is given up as non-deterministic"""
MAX_PROGRAM_CALLS = 5000
"""calls of ``candidate`` one check program may make"""


def _grade_program(files, program, entry_point, new_sandbox, setup, module, limits, test_timeout, seed):
    """Run a check program (source defining ``check(candidate)``) against the submitted
    ``files``; returns its outcome, or a string when the infrastructure failed.

    The program runs in a sandbox without the submission (stage ``program``) with ``random``
    seeded by ``seed``; when it calls ``candidate`` with arguments not answered yet, it runs on
    with stand-in values to collect the calls that follow, and the submission's sandbox (stage
    ``apply``) computes those calls from their arguments alone. The program then runs again from
    the start with the answers, until a run needs none: that run's result is the verdict. A
    submission sees argument lists and can only claim return values (and exceptions, by name).
    """
    harness = Path(__file__).with_name("harness.py").read_bytes()
    argv = ["python", "-I", "-B", HARNESS]
    known: list[dict] = []
    import_error = None
    for _ in range(MAX_ROUNDS):
        job = {
            "setup": setup,
            "program": program,
            "known": known,
            "seed": seed,
            "max_calls": MAX_PROGRAM_CALLS - len(known),
            "timeout": max(10.0, 4 * test_timeout),
        }
        box = new_sandbox()
        try:
            run = box.run(
                [*argv, "program", JOB],
                limits=Limits(timeout=max(20.0, 4 * test_timeout + 10), memory_mb=1024),
                readonly_files={HARNESS: harness, JOB: json.dumps(job).encode()},
            )
        except SandboxError as e:
            return f"program stage: {e}"
        finally:
            box.close()
        lines = [json.loads(x) for x in run.channel.decode(errors="replace").splitlines() if x.strip()]
        if not lines or not lines[-1].get("done"):
            return f"program stage ended early (exit {run.exit_code}, limit {run.limit}): {run.stderr[-500:]}"
        rec = lines[0]
        if "pass" in rec:
            detail = "" if rec["pass"] else _explain_program(rec["error"], rec.get("calls", 0), import_error)
            return TestOutcome(source="check(candidate)", passed=bool(rec["pass"]), detail=detail)
        known = known[: rec["keep"]]
        need = rec["need"]
        if not need or len(known) + len(need) > MAX_PROGRAM_CALLS:
            return TestOutcome(
                source="check(candidate)",
                passed=False,
                detail=f"the check program made more than {MAX_PROGRAM_CALLS} calls",
            )
        answers, import_error = _apply(
            files, need, entry_point, new_sandbox, module, setup, limits, test_timeout
        )
        if isinstance(answers, str):
            return answers
        known += [{"a": a, "r": r} for a, r in zip(need, answers, strict=True)]
    return (
        f"the check program's calls did not settle in {MAX_ROUNDS} rounds: it must make the same calls "
        "when given the same answers (seed its randomness; no iteration over sets of strings)"
    )


def _apply(files, need, entry_point, new_sandbox, module, setup, limits, test_timeout):
    """Stage ``apply`` on the argument lists ``need``: (one answer record per call, import error)."""
    harness = Path(__file__).with_name("harness.py").read_bytes()
    nonce = secrets.token_hex(16)
    job = {
        "nonce": nonce,
        "module": module,
        "entry_point": entry_point,
        "setup": setup,
        "apply": need,
        "test_timeout": test_timeout,
    }
    box = new_sandbox()
    try:
        for path, data in files.items():
            box.write_file(path, data)
        run = box.run(
            ["python", "-I", "-B", HARNESS, "apply", JOB],
            limits=limits,
            readonly_files={HARNESS: harness, JOB: json.dumps(job).encode()},
        )
    except SandboxError as e:
        return f"apply stage: {e}", None
    finally:
        box.close()

    def key_of(rec):
        k = rec.get("k")
        return k if type(k) is int and 0 <= k < len(need) else None

    seen, import_error = read_values(run.channel, nonce, key_of)
    return [seen.get(k, {"missing": True}) for k in range(len(need))], import_error


def _explain_program(error: str, calls: int, import_error: str | None) -> str:
    if import_error:
        return f"importing the solution failed: {import_error}"
    what = {
        "AssertionError": "an assertion failed",
        "Missing": "a call gave no result (the run died, timed out or never got there)",
    }.get(error, f"it raised {error}")
    return f"check(candidate) failed after {calls} calls: {what}"
