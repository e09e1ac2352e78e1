"""The ``Sandbox`` interface: run untrusted programs with no network, a read-only host, limits on
time, memory, file size, processes and output, and nothing left running afterwards.

A sandbox is a session: it holds a set of files (``write_file`` / ``read_file``) that every run
sees, fresh, in its work directory ``/work``. Whatever a run writes there or in ``/tmp`` vanishes
when the run ends, so one run can never leave anything for the next (or for the grader).

Backends: ``bwrap`` (bubblewrap, ``agentgym.envs.code.bwrap``) and ``docker``
(``agentgym.envs.code.docker_backend``). ``make_sandbox("auto")`` picks docker when an engine
answers, else bwrap; when neither is usable it raises ``SandboxUnavailable`` naming both install
routes. There is no fallback to an unisolated subprocess.

>>> Limits(timeout=2.0, memory_mb=256).cpu_seconds
3
>>> Limits(memory_mb=0)
Traceback (most recent call last):
...
ValueError: memory_mb must be at least 32, got 0
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

INSTALL_HELP = (
    "no sandbox backend is usable. Install one of: bubblewrap (`apt-get install bubblewrap`, "
    "the `bwrap` backend), or Docker (a running engine and `pip install 'agentgym[sandbox]'`, "
    "the `docker` backend)"
)

LIMIT_NAMES = ("timeout", "cpu", "memory", "file_size", "processes", "output")
"""what can stop a run, as reported in ``RunResult.limit``"""


class SandboxError(RuntimeError):
    """The sandbox itself failed (could not start, broke mid-run): an infrastructure failure,
    never the program's fault."""


class SandboxUnavailable(SandboxError):
    """The requested backend cannot run here; the message says how to install it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run."""

    timeout: float = 10.0
    """wall-clock seconds before the whole run (every process in it) is killed"""
    cpu_seconds: int | None = None
    """CPU seconds (RLIMIT_CPU); default: the timeout rounded up, plus one"""
    memory_mb: int = 512
    """address space of each process in MiB (RLIMIT_AS / the container's memory limit)"""
    file_size_mb: int = 16
    """largest file a run may write, in MiB (RLIMIT_FSIZE)"""
    disk_mb: int = 64
    """size of the writable /work and /tmp file systems, each, in MiB"""
    processes: int = 32
    """processes and threads the run may have at once (RLIMIT_NPROC / pids limit)"""
    output_bytes: int = 1 << 20
    """stdout and stderr kept, each; a run that prints more than 8x this is stopped"""
    cpus: float = 1.0
    """CPU cores (docker only: bubblewrap has no CPU share, the CPU-time limit applies)"""

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.cpu_seconds is None:
            object.__setattr__(self, "cpu_seconds", int(math.ceil(self.timeout)) + 1)
        if self.memory_mb < 32:
            raise ValueError(f"memory_mb must be at least 32, got {self.memory_mb}")
        for name in ("cpu_seconds", "file_size_mb", "disk_mb", "processes", "output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cpus <= 0:
            raise ValueError(f"cpus must be positive, got {self.cpus}")


@dataclass
class RunResult:
    """What one run did."""

    stdout: str
    stderr: str
    exit_code: int | None
    """the program's exit status; negative = killed by that signal; None = it never started"""
    limit: str | None = None
    """the limit that stopped it (one of ``LIMIT_NAMES``), or None"""
    duration: float = 0.0
    """wall-clock seconds"""
    truncated: bool = False
    """stdout or stderr was longer than ``Limits.output_bytes`` and was cut"""
    channel: bytes = b""
    """what the program wrote to the result channel (file descriptor 3), for the grader"""
    backend: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("channel")
        return out


MAX_FILES = 200
MAX_TOTAL_BYTES = 1 << 20
"""bytes of a session's files together (each run copies them into its sandbox)"""
MAX_NAME_BYTES = 255
"""longest file or directory name (the file systems' own limit)"""
MAX_PATH_BYTES = 1024
"""longest path: each path is an argument of the run's command, whose total size the kernel caps"""


def check_path(path: str, reserved_ok: bool = False) -> str:
    """Normalise a work-directory path; raise ``ValueError`` for absolute or escaping paths.

    >>> check_path("pkg/./mod.py")
    'pkg/mod.py'
    >>> check_path("../etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: path '../etc/passwd' leaves the work directory; use a relative path like 'solution.py'
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path must be a non-empty relative path like 'solution.py'")
    if path.startswith("/"):
        raise ValueError(f"path {path!r} is absolute; use a relative path like 'solution.py'")
    norm = posixpath.normpath(path)
    if norm == "." or norm.startswith("..") or "\x00" in norm:
        raise ValueError(f"path {path!r} leaves the work directory; use a relative path like 'solution.py'")
    if not reserved_ok and any(part.startswith(".agentgym") for part in norm.split("/")):
        raise ValueError(f"path {path!r} is reserved; choose another name")
    try:
        raw = norm.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        raise ValueError(f"path {path!r} is not valid text; use a name like 'solution.py'") from None
    size, longest = len(raw), max(len(part) for part in raw.split(b"/"))
    if size > MAX_PATH_BYTES or longest > MAX_NAME_BYTES:
        raise ValueError(
            f"path {norm[:60]!r}... is too long ({size} bytes, longest name {longest}); paths may have "
            f"{MAX_PATH_BYTES} bytes and names {MAX_NAME_BYTES}: use a shorter path like 'solution.py'"
        )
    return norm


class Sandbox:
    """A sandbox session. Subclasses implement ``_run``; files live host-side in ``self.files``."""

    backend = "base"
    max_input_bytes = 64 << 20
    """bytes of files one run can be given (the grader sizes the check stage's input to it)"""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.files: dict[str, bytes] = {}
        self.closed = False

    def write_file(self, path: str, content: str | bytes) -> str:
        """Store a file every later run sees at ``/work/<path>``; returns the normalised path."""
        norm = check_path(path)
        data = content.encode() if isinstance(content, str) else bytes(content)
        total = sum(len(d) for p, d in self.files.items() if p != norm) + len(data)
        if total > MAX_TOTAL_BYTES:
            raise ValueError(
                f"files would total {total} bytes; the limit is {MAX_TOTAL_BYTES} for all files together"
            )
        if norm not in self.files and len(self.files) >= MAX_FILES:
            raise ValueError(f"too many files (limit {MAX_FILES})")
        if any(p.startswith(norm + "/") for p in self.files) or any(
            norm.startswith(p + "/") for p in self.files
        ):
            raise ValueError(f"path {norm!r} clashes with a file or directory of the same name")
        self.files[norm] = data
        return norm

    def read_file(self, path: str) -> str:
        norm = check_path(path)
        if norm not in self.files:
            have = ", ".join(sorted(self.files)) or "none"
            raise FileNotFoundError(f"no file {norm!r}; files: {have}")
        return self.files[norm].decode("utf-8", errors="replace")

    def run(
        self,
        argv: list[str],
        *,
        limits: Limits | None = None,
        extra_files: dict[str, bytes] | None = None,
        readonly_files: dict[str, bytes] | None = None,
    ) -> RunResult:
        """Run ``argv`` in a fresh copy of the session's files.

        Args:
            argv: the command; ``python`` as its first word means the sandbox's Python.
            limits: overrides the session's limits for this run.
            extra_files: more files for this run only, placed in ``/work``.
            readonly_files: files for this run only at absolute paths under ``/opt/agentgym``,
                read-only (the grader's own code lives there).

        Raises:
            SandboxError: the sandbox failed (not the program).
        """
        if self.closed:
            raise SandboxError("the sandbox is closed")
        files = dict(self.files)
        for path, data in (extra_files or {}).items():
            files[check_path(path, reserved_ok=True)] = data
        for path in readonly_files or {}:
            if not path.startswith("/opt/agentgym/") or ".." in path:
                raise ValueError(f"read-only files live under /opt/agentgym/, got {path!r}")
        return self._run(list(argv), limits or self.limits, files, dict(readonly_files or {}))

    def run_python(self, code: str, *, limits: Limits | None = None) -> RunResult:
        """Run a snippet of Python with the session's files importable."""
        return self.run(
            ["python", "-u", ".agentgym_main.py"],
            limits=limits,
            extra_files={".agentgym_main.py": code.encode()},
        )

    def _run(
        self, argv: list[str], limits: Limits, files: dict[str, bytes], ro: dict[str, bytes]
    ) -> RunResult:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = ("bwrap", "docker")


def backend_problem(name: str, image: str | None = None, pull: bool = False) -> str | None:
    """Why ``name`` cannot run here (with how to fix it), or None when it can; for docker, with
    ``image`` (default: the backend's own) unless it may be pulled."""
    if name == "bwrap":
        from agentgym.envs.code.bwrap import bwrap_problem

        return bwrap_problem()
    if name == "docker":
        from agentgym.envs.code.docker_backend import DEFAULT_IMAGE, docker_problem

        return docker_problem(None if pull else image or DEFAULT_IMAGE)
    raise ValueError(f"unknown sandbox backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")


def resolve_backend(name: str = "auto", image: str | None = None, pull: bool = False) -> str:
    """The backend ``name`` stands for: ``auto`` = docker when an engine answers and has the
    image (``image``, default the backend's own), else bwrap.

    Raises:
        SandboxUnavailable: the named backend (or, for auto, every backend) cannot run here.
    """
    if name == "auto":
        problems = {b: backend_problem(b, image, pull) for b in ("docker", "bwrap")}
        for b in ("docker", "bwrap"):
            if problems[b] is None:
                return b
        raise SandboxUnavailable(f"{INSTALL_HELP} (docker: {problems['docker']}; bwrap: {problems['bwrap']})")
    problem = backend_problem(name, image, pull)
    if problem is not None:
        raise SandboxUnavailable(f"sandbox backend {name!r} cannot run: {problem}")
    return name


def make_sandbox(backend: str = "auto", limits: Limits | None = None, **kwargs: Any) -> Sandbox:
    """A new sandbox session on ``backend`` (``auto``, ``bwrap`` or ``docker``)."""
    name = resolve_backend(backend, kwargs.get("image"), kwargs.get("pull", False))
    if name == "bwrap":
        for docker_only in ("image", "pull", "pool"):
            kwargs.pop(docker_only, None)
        from agentgym.envs.code.bwrap import BwrapSandbox

        return BwrapSandbox(limits, **kwargs)
    from agentgym.envs.code.docker_backend import DockerSandbox

    return DockerSandbox(limits, **kwargs)
