"""Code environments and sandboxes.

``code/python_functions-v0`` (``agentgym.envs.code.env.CodeEnv``): write-a-function tasks with
visible and hidden tests, graded in fresh sandboxes. Sandboxes (``agentgym.envs.code.sandbox``):
``bwrap`` (bubblewrap) and ``docker``, picked with ``make_sandbox("auto")``.

    agentgym sandbox run --backend bwrap --timeout 5 FILE.py
    agentgym eval --env code/python_functions-v0 --policy teacher --n 40 --json
"""

from agentgym.envs.code.sandbox import (
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    make_sandbox,
    resolve_backend,
)

__all__ = [
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "make_sandbox",
    "resolve_backend",
]
