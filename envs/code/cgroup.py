"""Per-run cgroups for the bwrap backend: one memory and one pids cgroup (cgroup v1) per run, so
the run's processes TOGETHER stay under a memory bound (tmpfs files included) and a process
count, which per-process rlimits alone cannot promise.

The run's first process moves itself in before it execs the sandbox (the cgroups' ``cgroup.procs``
files are handed to the run's uid), so every process of the run is born inside. Where cgroup v1
controllers are not writable (no root, cgroup v2 only), ``RunCgroup.create`` returns None and the
rlimits alone apply; ``RunResult.details["cgroup"]`` says which.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

ROOT = "/sys/fs/cgroup"
ENTER_SCRIPT = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
"""``sh -c`` script: write our pid into each cgroup.procs named before ``--``, then exec the rest"""


def _own_path(controller: str) -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controller in controllers.split(","):
                    return path
    except OSError:
        return None
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class RunCgroup:
    dirs: dict[str, str] = field(default_factory=dict)
    """controller -> the cgroup directory made for this run"""

    @classmethod
    def create(cls, name: str, uid: int, memory_bytes: int, pids: int) -> RunCgroup | None:
        """Make the run's cgroups under this process's own (v1 memory and pids); None if impossible."""
        cg = cls()
        try:
            for controller in ("memory", "pids"):
                own = _own_path(controller)
                base = f"{ROOT}/{controller}{own}" if own is not None else None
                if base is None or not os.access(base, os.W_OK):
                    cg.remove()
                    return None
                path = os.path.join(base, name)
                os.mkdir(path)
                cg.dirs[controller] = path
                if controller == "memory":
                    _write(f"{path}/memory.limit_in_bytes", str(memory_bytes))
                    if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                        _write(f"{path}/memory.memsw.limit_in_bytes", str(memory_bytes))
                else:
                    _write(f"{path}/pids.max", str(pids))
                os.chown(f"{path}/cgroup.procs", uid, -1)
        except OSError:
            cg.remove()
            return None
        return cg

    @property
    def procs_files(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in self.dirs.values()]

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of the run for exceeding the memory bound."""
        path = self.dirs.get("memory")
        try:
            with open(f"{path}/memory.oom_control") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        except (OSError, TypeError, ValueError):
            pass
        return False

    def pids(self) -> list[int]:
        out: set[int] = set()
        for f in self.procs_files:
            try:
                with open(f) as fh:
                    out |= {int(x) for x in fh.read().split()}
            except OSError:
                pass
        return sorted(out)

    def remove(self) -> None:
        """Kill anything still inside, then remove the cgroups (retrying while processes exit)."""
        deadline = time.monotonic() + 2.0
        for controller, path in list(self.dirs.items()):
            while True:
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for the next cleanup; reported by the caller's leftover check
                    time.sleep(0.01)
            self.dirs.pop(controller, None)
