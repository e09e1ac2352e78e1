"""An environment written against the ``openenv-core`` package (not this project), served by that
package's ``create_app``: the model is shown a number and must send it back as its action.

Run (from .venv-openenv): ``python -m uvicorn openenv_echo_env:app --port 8000``
"""

import random

from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State


class EchoNumberAction(Action):
    number: int


class EchoNumberObservation(Observation):
    prompt: str = ""
    feedback: str = ""


class EchoNumberEnv(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self._state = State()
        self.target = 0

    def reset(self, seed=None, episode_id=None, **kwargs):
        self.target = random.Random(seed).randint(10, 99)
        self._state = State(episode_id=episode_id, step_count=0)
        return EchoNumberObservation(prompt=f"Send the number {self.target} with the step tool.")

    def step(self, action, timeout_s=None, **kwargs):
        self._state.step_count += 1
        right = action.number == self.target
        return EchoNumberObservation(
            feedback="right" if right else "wrong", reward=1.0 if right else 0.0, done=True
        )

    @property
    def state(self):
        return self._state


app = create_app(EchoNumberEnv, EchoNumberAction, EchoNumberObservation, max_concurrent_envs=64)
