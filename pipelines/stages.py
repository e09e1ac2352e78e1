"""The one stage helper every pipeline is built on.

A stage is a named step whose result is a small JSON record under the run directory. A stage
whose record exists is skipped, so rerunning a pipeline with the same settings resumes after its
last finished stage. Records are written to a temporary file and renamed into place: a killed
process leaves a whole record or none.

>>> import tempfile
>>> stages = Stages(tempfile.mkdtemp(), "demo", quiet=True)
>>> stages.run("round_01/count", "counting", lambda: {"n": 3})["n"]
3
>>> stages.run("round_01/count", "counting", lambda: {"n": 4})["n"]  # done earlier: not run again
3
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("p", "passed", "kept", "samples", "pairs", "steps", "first_loss", "last_loss", "seconds")
"""record fields that the progress line of a finished stage shows"""


class Stages:
    """Stage records of one run directory, and a progress line per stage on stderr."""

    def __init__(self, root: str | os.PathLike[str], label: str, quiet: bool = False):
        self.root = Path(root)
        self.label = label
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def read(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def write(self, key: str, data: dict[str, Any]) -> dict[str, Any]:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return data

    def run(self, key: str, text: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The record of stage ``key``: read back when it exists, else made by ``fn`` (timed)."""
        found = self.read(key)
        if found is not None:
            self.say(f"{text}: done earlier")
            return found
        self.say(f"{text} ...")
        t0 = time.perf_counter()
        result = fn()
        result.setdefault("seconds", round(time.perf_counter() - t0, 3))
        self.write(key, result)
        shown = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if k in SUMMARY_KEYS
        )
        self.say(f"{text}: {shown}")
        return result

    def say(self, msg: str) -> None:
        if self.quiet:
            return
        s = int(time.perf_counter() - self.t0)
        print(f"[{self.label} {s // 60:02d}:{s % 60:02d}] {msg}", file=sys.stderr, flush=True)


def same_settings(path: Path, settings: dict[str, Any], may_change: tuple[str, ...] = ()) -> None:
    """Write ``settings`` to ``path``; refuse (ValueError) when ``path`` holds other ones, so that
    two runs are never mixed in one directory. Fields in ``may_change`` may differ (e.g. rounds)."""
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(
            k
            for k in set(previous) | set(settings)
            if k not in may_change and previous.get(k) != settings.get(k)
        )
        if changed:
            raise ValueError(
                f"{path.parent} holds a run with other settings ({', '.join(changed)}); use a new "
                "directory, or the same settings to resume"
                + (f" (only {', '.join(may_change)} may change)" if may_change else "")
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def starting_model(model: str, run_dir: Path, seed: int) -> dict[str, Any]:
    """``tiny`` (built into ``run_dir/model0``), a name ``agentgym model get`` knows (written
    there), or a Hugging Face model directory."""
    if model == "tiny":
        from agentgym.policies.tiny import build_tiny_model

        path = run_dir / "model0"
        if not (path / "config.json").exists():
            build_tiny_model(path, seed=seed)
        return {"model": str(path), "tiny": True}
    if Path(model).is_dir():
        return {"model": str(Path(model).resolve()), "tiny": False}
    from agentgym.policies.models import KNOWN, get_model

    if model not in KNOWN:
        raise ValueError(
            f"model {model!r} is neither 'tiny', a known model ({', '.join(KNOWN)}) nor a directory"
        )
    return {"model": str(get_model(model, run_dir / "model0")), "tiny": False}
