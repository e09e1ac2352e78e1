"""agentgym: a gym for agentic, multi-turn, tool-using LLMs.

``import agentgym`` is light: it never imports torch, vLLM, Playwright or OpenSpiel.
"""

from agentgym.env import ToolEnv
from agentgym.policy import Policy, PolicySpec, SamplingParams, parse_spec, register_policy, resolve_policy
from agentgym.registry import list_envs, make, register
from agentgym.tools import Tool, tool
from agentgym.types import Message, Task, ToolCall, Trajectory, load_trajectories
from agentgym.verifiers import Rubric, StaticTraceVerifier, format_reward

__version__ = "0.1.0"

__all__ = [
    "Message",
    "Policy",
    "PolicySpec",
    "Rubric",
    "SamplingParams",
    "StaticTraceVerifier",
    "Task",
    "Tool",
    "ToolCall",
    "ToolEnv",
    "Trajectory",
    "format_reward",
    "list_envs",
    "load_trajectories",
    "make",
    "parse_spec",
    "register",
    "register_policy",
    "resolve_policy",
    "tool",
]


def _register_builtins() -> None:
    from agentgym.envs import register_builtin_envs

    register_builtin_envs()


_register_builtins()
