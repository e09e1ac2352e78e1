"""The ``bwrap`` sandbox backend: bubblewrap namespaces, an unprivileged uid, rlimits, a wall clock.

Each run starts ``prlimit ... bwrap ...`` as a fresh unprivileged uid (one per run, so process
limits and the leftover check never mix two runs). Inside: new user, pid, network, ipc, uts and
cgroup namespaces (``--unshare-all``, no nested user namespaces); ``/usr`` read-only and nothing
else of the host (no /etc, /home, /root, /tmp, no repository); size-limited tmpfs ``/work`` and
``/tmp`` holding a fresh copy of the session's files; the root and /dev read-only, a small
/dev/shm; an empty environment. rlimits bound CPU time, address space, file size and processes;
the wall clock kills the whole process group, and since bwrap's init is pid 1 of the run's pid namespace, every process of the run (daemons too)
dies with it. Afterwards the host is checked for any process still owned by the run's uid.

Run it: ``agentgym sandbox run --backend bwrap FILE.py``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from functools import lru_cache

from agentgym.envs.code.cgroup import ENTER_SCRIPT, RunCgroup
from agentgym.envs.code.sandbox import Limits, RunResult, Sandbox, SandboxError

PYTHONS = ("/usr/bin/python3.11", "/usr/bin/python3")
"""the sandbox's Python: a system interpreter under /usr (an unprivileged uid cannot run a
Python installed under /root, e.g. pyenv's)"""

UID_RANGE = (600_000, 900_000)
"""unprivileged uids handed to runs; no host account owns them"""


def find_python() -> str | None:
    for p in PYTHONS:
        if os.access(p, os.X_OK):
            return p
    return None


def _host_root_args() -> list[str]:
    """Mount /usr read-only and mirror the host's /bin, /lib, /lib64, /sbin (symlinks or binds)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _hidden_paths() -> list[str]:
    """Directories under /usr that hold this package (and so the hidden tests): masked in runs."""
    here = os.path.dirname(os.path.abspath(__file__))
    pkg = os.path.dirname(here)
    return [p for p in (here, pkg) if p.startswith("/usr/")]


class BwrapSandbox(Sandbox):
    """A sandbox session run with bubblewrap.

    Args:
        limits: default limits of each run.
        python: the interpreter used for ``python`` commands (default: /usr/bin/python3.11).
    """

    backend = "bwrap"

    def __init__(self, limits: Limits | None = None, python: str | None = None):
        super().__init__(limits)
        self.python = python or find_python()
        if self.python is None:
            raise SandboxError(
                f"no system Python found at {' or '.join(PYTHONS)}; install it: apt-get install python3"
            )

    def _command(self, argv: list[str], limits: Limits, files, ro, fds: list[int], env: dict[str, str]):
        def memfd(data: bytes) -> str:
            fd = os.memfd_create("agentgym")
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            fds.append(fd)
            return str(fd)

        mb = 1 << 20
        cmd = [
            "prlimit",
            f"--cpu={limits.cpu_seconds}",
            f"--as={limits.memory_mb * mb}",
            f"--fsize={limits.file_size_mb * mb}",
            f"--nproc={limits.processes + 2}",  # + bwrap and its init
            "--core=0",
            "--nofile=256",
            "--",
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            *_host_root_args(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        for hidden in _hidden_paths():
            cmd += ["--tmpfs", hidden]
        for mount in ("/tmp", "/work"):
            cmd += ["--size", str(limits.disk_mb * mb), "--tmpfs", mount]
        cmd += ["--size", str(min(limits.disk_mb, 16) * mb), "--tmpfs", "/dev/shm"]
        made = {"/work"}
        for path, data in sorted(files.items()):
            parent = posixpath.dirname("/work/" + path)
            if parent not in made:
                cmd += ["--dir", parent]
                made.add(parent)
            cmd += ["--perms", "0644", "--file", memfd(data), "/work/" + path]
        for path, data in sorted(ro.items()):
            cmd += ["--perms", "0444", "--ro-bind-data", memfd(data), path]
        # bwrap's own root and /dev are unbounded tmpfs: make them read-only once everything is in place
        cmd += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/work", "--clearenv"]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        if argv and argv[0] == "python":
            argv = [self.python, *argv[1:]]
        return [*cmd, "--", *argv]

    def _run(self, argv: list[str], limits: Limits, files, ro) -> RunResult:
        uid = claim_uid()
        try:
            return self._run_as(uid, argv, limits, files, ro)
        finally:
            release_uid(uid)

    def _run_as(self, uid: int, argv: list[str], limits: Limits, files, ro) -> RunResult:
        fds: list[int] = []
        chan_r, chan_w = os.pipe()
        stat_r, stat_w = os.pipe()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/work",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AGENTGYM_CHANNEL_FD": str(chan_w),
        }
        mb = 1 << 20
        cgroup = RunCgroup.create(
            f"agentgym-{uid}",
            uid,
            (limits.memory_mb + 2 * limits.disk_mb + 16 + 64) * mb,
            limits.processes + 2,
        )
        try:
            cmd = self._command(argv, limits, files, ro, fds, env)
            i = cmd.index("--unshare-all")
            cmd[i:i] = ["--json-status-fd", str(stat_w)]
            if cgroup is not None:
                cmd = ["/bin/sh", "-c", ENTER_SCRIPT, "sh", *cgroup.procs_files, "--", *cmd]
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(chan_w, stat_w, *fds),
                    user=uid,
                    group=uid,
                    extra_groups=[],
                    start_new_session=True,
                    env={"PATH": "/usr/bin:/bin"},
                    cwd="/",  # the shell exports its working directory (PWD), readable inside
                )
            except OSError as e:
                if cgroup is not None:
                    cgroup.remove()
                raise SandboxError(f"could not start bwrap: {e}") from e
        finally:
            for fd in (chan_w, stat_w, *fds):
                os.close(fd)
        try:
            out, err, chan, status, limit = _collect(proc, [chan_r, stat_r], limits, start)
        finally:
            os.close(chan_r)
            os.close(stat_r)
        duration = time.monotonic() - start
        leftovers = kill_uid(uid)
        oom = False
        if cgroup is not None:
            oom = cgroup.oom_killed()
            cgroup.remove()
        started = b'"child-pid"' in status
        if not started:
            raise SandboxError(
                f"bwrap failed to start the program: {err.decode(errors='replace').strip()[:2000]}"
            )
        code = proc.returncode
        for doc in re.findall(rb"\{[^{}]*\}", status):
            try:
                code = int(json.loads(doc).get("exit-code", code))
            except (ValueError, TypeError):
                pass
        if code is not None and 128 < code <= 128 + 64:
            code = -(code - 128)
        if limit is None:
            limit = "memory" if oom else infer_limit(code, err)
        cap = limits.output_bytes
        return RunResult(
            stdout=out[:cap].decode(errors="replace"),
            stderr=err[:cap].decode(errors="replace"),
            exit_code=code,
            limit=limit,
            duration=duration,
            truncated=len(out) > cap or len(err) > cap,
            channel=chan,
            backend=self.backend,
            details={"uid": uid, "leftover_processes_killed": leftovers, "cgroup": cgroup is not None},
        )


_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


def claim_uid() -> int:
    """A random uid of ``UID_RANGE`` that no other run of this process holds and no host process
    runs as: two runs sharing a uid could signal each other, and the leftover sweep of one would
    kill the other."""
    with _uids_lock:
        while True:
            uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
            if uid not in _uids_in_use and not processes_of_uid(uid):
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


def _collect(proc: subprocess.Popen, extra: list[int], limits: Limits, start: float):
    """Read stdout, stderr and the extra pipes until all close, killing the run's process group
    when the wall clock runs out or the output grows past 8x the kept size."""
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {}
    for f in (proc.stdout, proc.stderr):
        sel.register(f.fileno(), selectors.EVENT_READ)
        bufs[f.fileno()] = bytearray()
    for fd in extra:
        sel.register(fd, selectors.EVENT_READ)
        bufs[fd] = bytearray()
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    deadline = start + limits.timeout
    limit = None
    killed = False
    caps = {out_fd: 8 * limits.output_bytes, err_fd: 8 * limits.output_bytes}
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0 and not killed:
            limit, killed = "timeout", True
            _kill_group(proc)
        for key, _ in sel.select(timeout=max(0.0, left) if not killed else 1.0):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            cap = caps.get(key.fd, 16 << 20)
            if len(buf) < cap:
                buf += chunk[: cap - len(buf)]
            elif not killed:
                limit, killed = "output", True
                _kill_group(proc)
        if killed and time.monotonic() > deadline + 5:
            break  # a pipe still open after the kill: give up on it
    sel.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), bytes(bufs[extra[0]]), bytes(bufs[extra[1]]), limit


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def processes_of_uid(uid: int) -> list[int]:
    """Pids of the host's live (not zombie) processes running as ``uid``.

    The owner of ``/proc/PID`` is the process's effective uid; a sandboxed process cannot change
    it (bwrap sets no-new-privileges, so setuid programs do not work inside)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def kill_uid(uid: int) -> int:
    """Kill every process still owned by ``uid`` half a second after its run ended (a run's
    processes need a moment to exit once its pid namespace is gone); returns how many there were."""
    pids = processes_of_uid(uid)
    deadline = time.monotonic() + 0.5
    while pids and time.monotonic() < deadline:
        time.sleep(0.01)
        pids = processes_of_uid(uid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


_STDERR_HINTS = (
    (b"MemoryError", "memory"),
    (b"Cannot allocate memory", "memory"),
    (b"File too large", "file_size"),
    (b"No space left on device", "file_size"),
    (b"Resource temporarily unavailable", "processes"),
    (b"can't start new thread", "processes"),
)


def infer_limit(code: int | None, stderr: bytes) -> str | None:
    """Which limit stopped a run that ended by itself: from its signal, or its last error line."""
    if code == -signal.SIGXCPU:
        return "cpu"
    if code == -signal.SIGXFSZ:
        return "file_size"
    if code in (0, None):
        return None
    tail = stderr[-2000:]
    for needle, name in _STDERR_HINTS:
        if needle in tail:
            return name
    return None


@lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why the bwrap backend cannot run here (with the fix), or None when a probe run works."""
    if shutil.which("bwrap") is None:
        return "the `bwrap` program is missing; install it: apt-get install bubblewrap"
    if shutil.which("prlimit") is None:
        return "the `prlimit` program is missing; install it: apt-get install util-linux"
    if find_python() is None:
        return f"no system Python at {' or '.join(PYTHONS)}; install it: apt-get install python3"
    if os.geteuid() != 0:
        return "the bwrap backend runs each program as a fresh unprivileged uid, which needs root"
    try:
        result = BwrapSandbox(Limits(timeout=20)).run(["python", "-c", "print(6 * 7)"])
    except SandboxError as e:
        return f"a probe run failed: {e}"
    if result.stdout.strip() != "42":
        return f"a probe run printed {result.stdout!r} (exit {result.exit_code}): {result.stderr[-500:]}"
    return None
