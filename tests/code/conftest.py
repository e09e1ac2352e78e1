"""Fixtures for the code sandbox tests: a usable bwrap backend (required under CI=true), and
whether a Docker engine answers (docker tests are skipped, with the reason, where none does)."""

import pytest

from agentgym.testing import in_ci, need


@pytest.fixture(scope="session")
def bwrap_ready():
    need(binary="bwrap", install="apt-get install bubblewrap")
    from agentgym.envs.code.bwrap import bwrap_problem

    problem = bwrap_problem()
    if problem is not None:
        if in_ci():
            pytest.fail(f"CI=true and the bwrap backend cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    return True


def docker_skip_reason():
    from agentgym.envs.code.docker_backend import docker_problem

    problem = docker_problem()
    return None if problem is None else f"needs a Docker engine: {problem}"


@pytest.fixture(params=["bwrap", "docker"])
def backend(request):
    """Each backend in turn: bwrap must work; docker runs only where an engine answers."""
    if request.param == "bwrap":
        request.getfixturevalue("bwrap_ready")
    else:
        reason = docker_skip_reason()
        if reason is not None:
            pytest.skip(reason)
    return request.param
