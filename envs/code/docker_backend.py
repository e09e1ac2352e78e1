"""The ``docker`` sandbox backend: one container per session, removed when the session closes.

The container has no network, a read-only root file system, tmpfs ``/work``, ``/tmp`` and
``/opt/agentgym``, memory / CPU / pids limits, every capability dropped and no-new-privileges,
and runs as uid 65534. Each run wipes ``/work``, ``/tmp``, ``/dev/shm`` and ``/opt/agentgym`` (where
inputs larger than an exec's environment are staged first), unpacks the session's files,
applies rlimits and ``exec``s the program under ``timeout -s KILL``; afterwards every process of
the sandbox user is killed, so nothing one run starts survives into the next. The container is
removed on ``close()``, when the session is garbage collected, and at interpreter exit, even
after errors.

Needs a Docker engine and ``pip install 'agentgym[sandbox]'``. Run it:
``agentgym sandbox run --backend docker FILE.py``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import weakref
from functools import lru_cache

from agentgym.envs.code.sandbox import Limits, RunResult, Sandbox, SandboxError, SandboxUnavailable

DEFAULT_IMAGE = "agentgym-sandbox:latest"
"""built here by ``agentgym sandbox build-image`` (agentgym.envs.code.engine); any image with
``python3``, ``python`` and coreutils does, e.g. ``image="python:3.11-slim", pull=True``"""
USER = "65534:65534"
MAX_PAYLOAD = 40 << 20
"""bytes of one run's files (as JSON of base64) one run may carry"""
ENV_CHUNK = 1_000_000
"""characters of the payload one exec carries in its environment (execve caps all of it at about
2 MB); a larger payload is first appended to ``STAGE`` (on the run's tmpfs) by one short exec per
chunk, and the run's loader reads it from there"""
STAGE = "/opt/agentgym/.stage"

_LOADER = r"""
import base64, json, os, resource, shutil, sys
staged = ""
if os.environ.pop("AGENTGYM_STAGED", "") == "1":
    with open("/opt/agentgym/.stage") as f:
        staged = f.read()
for root in ("/work", "/tmp", "/dev/shm", "/opt/agentgym"):
    for name in os.listdir(root) if os.path.isdir(root) else ():
        p = os.path.join(root, name)
        shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
keys = sorted(k for k in os.environ if k.startswith("AGENTGYM_FILES_"))
files = json.loads(staged + "".join(os.environ.pop(k) for k in keys))
for path, (data, mode) in files.items():
    if not path.startswith(("/work/", "/opt/agentgym/")) or "/../" in path:
        raise SystemExit(f"refused path {path!r}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    os.chmod(path, mode)
resource.setrlimit(resource.RLIMIT_AS, (int(os.environ.pop("AGENTGYM_AS")),) * 2)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ.pop("AGENTGYM_FSIZE")),) * 2)
resource.setrlimit(resource.RLIMIT_CPU, (int(os.environ.pop("AGENTGYM_CPU")),) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.chdir("/work")
os.execvp(sys.argv[1], sys.argv[1:])
"""


@lru_cache(maxsize=8)
def docker_problem(image: str | None = DEFAULT_IMAGE) -> str | None:
    """Why the docker backend cannot run ``image`` here (with the fix), or None when an engine
    answers and has that image (``image=None``: the engine alone)."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed; pip install 'agentgym[sandbox]'"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as e:  # DockerException, connection errors: no engine answers
        return (
            f"no Docker engine answers ({type(e).__name__}: {str(e)[:200]}); start one "
            "(agentgym sandbox engine start) or use --backend bwrap"
        )
    if image is not None:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            how = "build it: agentgym sandbox build-image" if image == DEFAULT_IMAGE else "docker pull it"
            return f"the Docker engine has no image {image!r}; {how}"
        except docker.errors.DockerException as e:
            return f"the Docker engine did not answer about image {image!r}: {e}"
    return None


def _remove(client, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True)
    except Exception:
        pass


class DockerSandbox(Sandbox):
    """A sandbox session in its own Docker container.

    Args:
        limits: default limits of each run (memory, CPU and pids also bound the container).
        image: the image to run (default ``DEFAULT_IMAGE``); it needs ``python3``, ``python`` and
            coreutils' ``timeout``.
        pull: pull ``image`` from its registry when the engine lacks it (otherwise that is an
            error that says how to build the default image).
    """

    backend = "docker"
    max_input_bytes = MAX_PAYLOAD * 3 // 4 - 4096  # base64 and JSON around the bytes

    def __init__(self, limits: Limits | None = None, image: str | None = None, pull: bool = False):
        super().__init__(limits)
        problem = docker_problem(None)
        if problem is not None:
            raise SandboxUnavailable(problem)
        import docker

        self.client = docker.from_env(timeout=30)
        self.image = image = image or DEFAULT_IMAGE
        lim = self.limits
        try:
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                if not pull:
                    how = (
                        "build it: agentgym sandbox build-image"
                        if image == DEFAULT_IMAGE
                        else "pull it yourself (docker pull), or pass pull=True"
                    )
                    raise SandboxUnavailable(f"the Docker engine has no image {image!r}; {how}") from None
                self.client.images.pull(image)
            self.container = self.client.containers.run(
                image,
                ["sleep", "infinity"],
                detach=True,
                network_mode="none",
                user=USER,
                read_only=True,
                mem_limit=f"{lim.memory_mb}m",
                memswap_limit=f"{lim.memory_mb}m",
                nano_cpus=int(lim.cpus * 1e9),
                pids_limit=lim.processes + 3,  # + the container's init, `timeout`, a clean-up exec
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                tmpfs={
                    "/work": f"rw,size={lim.disk_mb}m,uid=65534,gid=65534,mode=0755",
                    "/tmp": f"rw,size={lim.disk_mb}m,uid=65534,gid=65534,mode=0755",
                    "/opt/agentgym": f"rw,size={MAX_PAYLOAD * 5 // 4 >> 20}m,uid=65534,gid=65534,mode=0755",
                },
                working_dir="/work",
                labels={"agentgym.sandbox": "1"},
            )
        except docker.errors.DockerException as e:
            raise SandboxError(f"could not start a container from {image!r}: {e}") from e
        self._finalizer = weakref.finalize(self, _remove, self.client, self.container.id)

    def _run(self, argv: list[str], limits: Limits, files, ro) -> RunResult:
        entries = {f"/work/{p}": (base64.b64encode(d).decode(), 0o644) for p, d in files.items()}
        entries.update({p: (base64.b64encode(d).decode(), 0o444) for p, d in ro.items()})
        payload = json.dumps(entries)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(
                f"the files of one run take {len(payload)} bytes encoded; the docker backend carries {MAX_PAYLOAD}"
            )
        # the last ENV_CHUNK characters travel in the run's own environment, any before them
        # through STAGE
        tail = max(0, len(payload) - ENV_CHUNK)
        self._stage(payload[:tail])
        env = {
            f"AGENTGYM_FILES_{i:04d}": payload[j : j + 100_000]
            for i, j in enumerate(range(tail, len(payload), 100_000))
        }
        if tail:
            env["AGENTGYM_STAGED"] = "1"
        mb = 1 << 20
        env.update(
            AGENTGYM_AS=str(limits.memory_mb * mb),
            AGENTGYM_FSIZE=str(limits.file_size_mb * mb),
            AGENTGYM_CPU=str(limits.cpu_seconds),
            AGENTGYM_CHANNEL_FD="1",
            HOME="/work",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if argv and argv[0] == "python":
            argv = ["python3", *argv[1:]]
        secs = max(1, int(limits.timeout + 0.999))
        cmd = ["timeout", "-s", "KILL", str(secs), "python3", "-I", "-S", "-c", _LOADER, *argv]
        api = self.client.api
        start = time.monotonic()
        try:
            exec_id = api.exec_create(self.container.id, cmd, user=USER, environment=env, workdir="/work")[
                "Id"
            ]
            stream = api.exec_start(exec_id, stream=True, demux=True)
        except Exception as e:
            raise SandboxError(f"docker exec failed: {e}") from e
        out, err = bytearray(), bytearray()
        cap = 8 * limits.output_bytes
        flooded = threading.Event()

        def pump() -> None:  # drains the stream to its end; output past the cap is dropped
            for o, e in stream:
                if o:
                    out.extend(o[: max(0, cap - len(out))])
                if e:
                    err.extend(e[: max(0, cap - len(err))])
                if len(out) >= cap or len(err) >= cap:
                    flooded.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        limit = None
        deadline = start + limits.timeout + 5
        while reader.is_alive() and time.monotonic() < deadline:
            reader.join(0.1)
            if not reader.is_alive():
                break
            if flooded.is_set() and limit is None:
                limit = "output"
                self._kill_all()
            elif not api.exec_inspect(exec_id).get("Running", True):
                self._kill_all()  # the program ended but a daemon still holds its output open
        if reader.is_alive():
            limit = limit or "timeout"
            self._kill_all()
            reader.join(5)
        duration = time.monotonic() - start
        code = api.exec_inspect(exec_id).get("ExitCode")
        self._kill_all()
        if code == 137 and limit is None and duration >= limits.timeout - 0.5:
            limit = "timeout"
        if code is not None and 128 < code <= 192:
            code = -(code - 128)
        from agentgym.envs.code.bwrap import infer_limit

        limit = limit or infer_limit(code, bytes(err))
        # the program's stdout is the result channel here (the grader's harness moves the
        # program's own prints to stderr); the grader trusts only values, never this channel
        ocap = limits.output_bytes
        return RunResult(
            stdout=bytes(out[:ocap]).decode(errors="replace"),
            stderr=bytes(err[:ocap]).decode(errors="replace"),
            exit_code=code,
            limit=limit,
            duration=duration,
            truncated=len(out) > ocap or len(err) > ocap,
            channel=bytes(out),
            backend=self.backend,
            details={"container": self.container.id[:12]},
        )

    def _stage(self, data: str) -> None:
        """Write ``data`` to ``STAGE`` in the container, ``ENV_CHUNK`` characters per exec."""
        api = self.client.api
        for i in range(0, len(data), ENV_CHUNK):
            mode = "w" if i == 0 else "a"
            code = (
                "import os; keys = sorted(k for k in os.environ if k.startswith('AGENTGYM_STAGE_')); "
                f"open({STAGE!r}, {mode!r}).write(''.join(os.environ[k] for k in keys))"
            )
            chunk = data[i : i + ENV_CHUNK]
            try:
                exec_id = api.exec_create(
                    self.container.id,
                    ["python3", "-I", "-S", "-c", code],
                    user=USER,
                    environment={  # one variable holds at most 128 KiB (MAX_ARG_STRLEN)
                        f"AGENTGYM_STAGE_{k:04d}": chunk[j : j + 100_000]
                        for k, j in enumerate(range(0, len(chunk), 100_000))
                    },
                )["Id"]
                api.exec_start(exec_id)
                exit_code = api.exec_inspect(exec_id).get("ExitCode")
            except Exception as e:
                raise SandboxError(f"docker exec failed while staging a run's files: {e}") from e
            if exit_code != 0:
                raise SandboxError(f"staging a run's files failed (exit code {exit_code})")

    def _kill_all(self) -> None:
        """Kill every process of the sandbox user (daemons included) and remove its SysV IPC
        objects; the container's init stays."""
        try:
            # kill(-1) spares the shell itself (Linux), which then removes the user's SysV IPC
            # objects: shared memory, queues and semaphores live in the container, not the run
            self.container.exec_run(["sh", "-c", "kill -9 -1; ipcrm --all 2>/dev/null; true"], user=USER)
            return
        except Exception:
            pass  # e.g. no pid left for the exec: restart the container instead
        try:
            self.container.kill()
            self.container.start()
        except Exception as e:
            raise SandboxError(f"could not clean up the container: {e}") from e

    def close(self) -> None:
        if not self.closed:
            self._finalizer()
        super().close()
