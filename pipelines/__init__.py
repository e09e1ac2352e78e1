"""Pipelines: runs made of stages that drive the env, policy, data and trainer layers.

- ``flywheel``: rounds of generate -> verify -> filter -> train -> evaluate, then optional arms
  (GRPO, DPO) compared side by side, with a report of the pass rate round after round;
- ``quickstart``: a preset of the flywheel (teacher round, SFT, GRPO and DPO arms) on the
  calculator env, for the tiny model or a real one;
- ``stages``: the stage helper both are built on (records, resume, progress).

The core packages never import this one; it imports them.
"""

from agentgym.pipelines.flywheel import FlywheelConfig, collect_report, load_config, run_flywheel
from agentgym.pipelines.quickstart import (
    QuickstartConfig,
    collect_quickstart,
    format_quickstart,
    run_quickstart,
)

__all__ = [
    "FlywheelConfig",
    "QuickstartConfig",
    "collect_quickstart",
    "collect_report",
    "format_quickstart",
    "load_config",
    "run_flywheel",
    "run_quickstart",
]
