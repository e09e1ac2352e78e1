"""An MCP environment written against the ``openenv-core`` package (its ``MCPEnvironment`` over a
FastMCP server), served by that package's ``create_app``: count a letter in a word with one tool,
then submit the count with another.

Run (from .venv-openenv): ``python -m uvicorn openenv_mcp_env:app --port 8000``
"""

import random

from fastmcp import FastMCP
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.mcp_environment import MCPEnvironment
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation
from openenv.core.env_server.types import Observation, State

WORDS = ["banana", "mississippi", "letter", "committee", "bookkeeper", "parallel"]


class LetterObservation(Observation):
    prompt: str = ""


class LetterCountEnv(MCPEnvironment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        server = FastMCP("letters")

        @server.tool
        def count_letters(word: str, letter: str) -> int:
            """How many times a letter occurs in a word."""
            return word.count(letter)

        @server.tool
        def submit(answer: int) -> str:
            """Submit the final count."""
            return "submitted"

        super().__init__(server)
        self._state = State()
        self.word, self.letter = "", ""

    def reset(self, seed=None, episode_id=None, **kwargs):
        rng = random.Random(seed)
        self.word = rng.choice(WORDS)
        self.letter = rng.choice(sorted(set(self.word)))
        self._state = State(episode_id=episode_id, step_count=0)
        return LetterObservation(
            prompt=f"How many times does '{self.letter}' occur in '{self.word}'? Submit the count."
        )

    async def step_async(self, action, timeout_s=None, **kwargs):
        obs = await super().step_async(action, timeout_s=timeout_s, **kwargs)
        self._state.step_count += 1
        if (
            isinstance(action, CallToolAction)
            and action.tool_name == "submit"
            and isinstance(obs, CallToolObservation)
        ):
            obs.done = True
            obs.reward = 1.0 if action.arguments.get("answer") == self.word.count(self.letter) else 0.0
        return obs

    def _step_impl(self, action, timeout_s=None, **kwargs):
        return LetterObservation(prompt="use the tools", reward=0.0)

    @property
    def state(self):
        return self._state


app = create_app(LetterCountEnv, CallToolAction, CallToolObservation, max_concurrent_envs=16)
