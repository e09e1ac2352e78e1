"""Fixtures for the code sandbox tests: a usable bwrap backend and a Docker engine with the
sandbox image, both required under CI=true (elsewhere their tests skip, saying how to get them)."""

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
        docker_ready()
    return request.param


def docker_ready():
    """Fail under CI=true, skip elsewhere, unless the docker backend can run its image."""
    reason = docker_skip_reason()
    if reason is None:
        return
    fix = "apt-get install docker.io debootstrap; agentgym sandbox engine start; agentgym sandbox build-image"
    if in_ci():
        pytest.fail(f"CI=true and this test {reason} ({fix})", pytrace=False)
    pytest.skip(f"{reason} ({fix})")


@pytest.fixture
def docker_engine():
    """A Docker engine with the sandbox image (required under CI=true)."""
    docker_ready()
