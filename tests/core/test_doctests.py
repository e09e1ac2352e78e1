"""Every ``>>>`` example in the package runs (modules whose optional dependency is missing are
reported, and fail under CI=true)."""

import doctest
import importlib
import pkgutil

import pytest

import agentgym
from agentgym.testing import in_ci

SKIP_PREFIXES = ("agentgym.__main__",)


def _modules():
    names = []
    for info in pkgutil.walk_packages(agentgym.__path__, "agentgym."):
        if not info.name.startswith(SKIP_PREFIXES):
            names.append(info.name)
    for sub in ("envs", "policies", "trainers", "pipelines"):
        pkg = importlib.import_module(f"agentgym.{sub}")
        names.extend(i.name for i in pkgutil.walk_packages(pkg.__path__, f"agentgym.{sub}."))
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        if in_ci():
            raise
        pytest.skip(f"{name} needs an optional package: {e}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
