"""An env whose one tool sleeps: for the timeout tests of remote envs."""

import time

from agentgym import Task, ToolEnv, tool


class SlowEnv(ToolEnv):
    blocking = True

    @tool
    def wait(self, seconds: float) -> str:
        """Sleep.

        Args:
            seconds: how long
        """
        time.sleep(seconds)
        return "done"

    def load_task(self, task_id):
        return Task(task_id=task_id or "slow-0", prompt="Wait.")

    def task_ids(self, n, seed=0):
        return [f"slow-{i}" for i in range(n)]
