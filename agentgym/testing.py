"""Helpers for tests that need optional components (a browser, bubblewrap, vLLM, OpenSpiel).

Under ``CI=true`` a missing component FAILS the test: a skipped real-component test is a hole.
Elsewhere the test is skipped with a reason naming the install command.
"""

from __future__ import annotations

import importlib.util
import os
import shutil


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(*, module: str | None = None, binary: str | None = None, install: str) -> None:
    """Fail (in CI) or skip (elsewhere) unless ``module`` imports and ``binary`` is on PATH."""
    import pytest

    missing = []
    if module is not None and importlib.util.find_spec(module) is None:
        missing.append(f"python module {module!r}")
    if binary is not None and shutil.which(binary) is None:
        missing.append(f"program {binary!r}")
    if not missing:
        return
    reason = f"needs {' and '.join(missing)}; install with: {install}"
    if in_ci():
        pytest.fail(f"CI=true and this test {reason}", pytrace=False)
    pytest.skip(reason)
