"""One check over the whole registry: Gymnasium's check_env, and the same seed giving the same
transcript under a fixed sequence of sampled actions."""

import warnings

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym import registry
from agentgym.testing import need

NEEDS = {
    "games": dict(module="pyspiel", install="pip install 'agentgym[games]'"),
    "web": dict(
        module="playwright",
        binary="chromium",
        install="pip install 'agentgym[web]' && apt-get install chromium",
    ),
    "sandbox": dict(binary="bwrap", install="apt-get install bubblewrap"),
}


def _required_kwargs(env_id):
    """Envs registered without a default for a required argument get a shipped one here."""
    if env_id == "web/replay-v0":
        from agentgym.envs.web.site import SITES_DIR

        return {"site": str(SITES_DIR / "wiki")}
    return {}


def _needs(env_id):
    entry = registry.spec(env_id)
    if entry.requires in NEEDS:
        need(**NEEDS[entry.requires])


def _transcript(env, seed, steps=4):
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


@pytest.fixture
def kwargs_for(request):
    """The kwargs an env id needs here; a remote env gets a served calculator, stopped after."""
    stops = []

    def kwargs(env_id):
        if env_id == "openenv/remote-v0":
            from agentgym.envs.openenv.server import ServerProcess

            server = ServerProcess("toy/calculator-v0")
            stops.append(server.stop)
            return {"url": server.ws}
        return _required_kwargs(env_id)

    yield kwargs
    for stop in stops:
        stop()


@pytest.mark.parametrize("env_id", agentgym.list_envs())
def test_check_env(env_id, kwargs_for):
    _needs(env_id)
    env = agentgym.make(env_id, **kwargs_for(env_id))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)
        assert _transcript(env, 7) == _transcript(env, 7)
    finally:
        env.close()
        env.close()  # closing twice is safe
