"""The ``docker`` sandbox backend: each session holds one container of its own.

Containers come from a warm pool: a closed session's container is reset (every process of the
sandbox user killed, its files, ``/dev/shm``, POSIX and SysV IPC removed, then checked) and kept
for the next session with the same image and limits; one that cannot be reset is removed. A
container is never lent to two sessions at once. The container has no network, a read-only
root file system, tmpfs ``/work``, ``/tmp`` and ``/opt/agentgym``, memory / CPU / pids limits,
every capability dropped and no-new-privileges; runs are execs as uid 65534. Each run wipes
``/work``, ``/tmp``, ``/dev/shm``, ``/dev/mqueue`` and ``/opt/agentgym`` (where inputs larger than an exec's environment are staged first), unpacks the session's files,
applies rlimits and ``exec``s the program under ``timeout -s KILL``; afterwards every process of
the sandbox user is killed, so nothing one run starts survives into the next. The container's
init (``docker-init``, with ``sleep`` under it) runs as root with no capabilities, out of the
sandbox user's reach: it cannot be signalled or traced, and it reaps orphans, so a run's dead
processes never use up the next one's pids. A session that is garbage collected unclosed has
its container removed; idle pooled containers are removed at interpreter exit, and containers
left by a process that was killed are removed the next time a pool starts on that host.

Needs a Docker engine and ``pip install 'agentgym[sandbox]'``. Run it:
``agentgym sandbox run --backend docker FILE.py``.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import socket
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
POOL_SIZE = 8
"""idle containers kept warm per image and limits (``pool=0``: a container per session)"""
WRITABLE = ("/work", "/tmp", "/dev/shm", "/dev/mqueue", "/opt/agentgym")
"""every place the sandbox user can write; wiped before each run and before a container is
lent again"""

_WIPE = r"""
import os
def wipe(root):
    dirs = []
    for d, subdirs, files in os.walk(root):
        links = [s for s in subdirs if os.path.islink(os.path.join(d, s))]
        subdirs[:] = [s for s in subdirs if s not in links]
        for s in subdirs:
            os.chmod(os.path.join(d, s), 0o700)  # a directory the program made unreadable goes too
            dirs.append(os.path.join(d, s))
        for f in files + links:
            os.unlink(os.path.join(d, f))
    for p in reversed(dirs):
        os.rmdir(p)
"""

_LOADER = (
    _WIPE
    + f"""
import base64, json, resource, sys
staged = ""
if os.environ.pop("AGENTGYM_STAGED", "") == "1":
    with open({STAGE!r}) as f:
        staged = f.read()
for root in {WRITABLE!r}:
    wipe(root)
"""
    + r"""
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
)

_RESET = (
    _WIPE
    + f"""
for root in {WRITABLE!r}:
    wipe(root)
left = [os.path.join(r, n) for r in {WRITABLE!r} if os.path.isdir(r) for n in os.listdir(r)]
me = {{os.getpid(), os.getppid()}}
procs = []
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in me:
        try:
            st = os.stat("/proc/" + pid)
            state = open("/proc/" + pid + "/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if st.st_uid == os.getuid() and state != "Z":
            procs.append(int(pid))
print("left", len(left), len(procs))
"""
)
"""run as the sandbox user after every process of it was killed: wipes what it can write and
prints what is left (a container with anything left is not lent again)"""


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


class _Pool:
    """Idle containers by configuration (image and container limits), lent one session at a time."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.idle: dict[tuple, list[str]] = {}
        self.resetting: dict[tuple, int] = {}
        self.growing: dict[tuple, int] = {}
        self.swept = False
        self.stats = {"warm": 0, "cold": 0, "kept": 0, "discarded": 0}

    def take(self, key: tuple) -> str | None:
        """An idle container for ``key``; waits for one being reset rather than start a new one
        (a reset takes a fraction of a container's start)."""
        with self.lock:
            self.lock.wait_for(
                lambda: self.idle.get(key) or not (self.resetting.get(key) or self.growing.get(key)),
                timeout=30,
            )
            ids = self.idle.get(key)
            container_id = ids.pop() if ids else None
            self.stats["warm" if container_id else "cold"] += 1
            return container_id

    def grow(self, box: DockerSandbox) -> None:
        """When ``box`` took the last idle container of its kind (or none was left), start one
        more in the background, up to the pool's size: the pool grows to what is in use at once."""
        key = box._key
        with self.lock:
            ready = len(self.idle.get(key, ())) + self.resetting.get(key, 0) + self.growing.get(key, 0)
            if self.idle.get(key) or self.growing.get(key) or ready >= box.pool:
                return
            self.growing[key] = self.growing.get(key, 0) + 1

        def work() -> None:
            container_id = None
            try:
                container_id = box._start(box.image, False)
            except Exception:
                pass  # the session that needs one will start it and report why it cannot
            finally:
                with self.lock:
                    ids = self.idle.setdefault(key, [])
                    if container_id and len(ids) < box.pool:
                        ids.append(container_id)
                        container_id = None
                    self.growing[key] -= 1
                    self.lock.notify_all()
                if container_id:
                    _remove(box.client, container_id)

        threading.Thread(target=work, name="agentgym-docker-grow").start()

    def give_back(self, box: DockerSandbox) -> None:
        """Reset ``box``'s container in the background, then keep it idle or remove it."""
        with self.lock:
            self.resetting[box._key] = self.resetting.get(box._key, 0) + 1

        def work() -> None:
            kept = False
            try:
                clean = box.reset()
                with self.lock:
                    ids = self.idle.setdefault(box._key, [])
                    if clean and len(ids) < box.pool:
                        ids.append(box.container.id)
                        self.stats["kept"] += 1
                        kept = True
                    self.stats["discarded"] += not clean
            finally:
                box._finalizer.detach() if kept else box._finalizer()
                with self.lock:
                    self.resetting[box._key] -= 1
                    self.lock.notify_all()

        threading.Thread(target=work, name="agentgym-docker-reset").start()

    def settle(self, timeout: float = 60) -> None:
        """Wait until no container is being reset or started for the pool."""
        with self.lock:
            self.lock.wait_for(
                lambda: not any(self.resetting.values()) and not any(self.growing.values()), timeout
            )

    def drain(self, client=None) -> int:
        """Remove every idle container (at interpreter exit, or to start cold); returns how many."""
        self.settle()
        with self.lock:
            ids = [i for v in self.idle.values() for i in v]
            self.idle.clear()
        if ids:
            import docker

            client = client or docker.from_env(timeout=30)
            for i in ids:
                _remove(client, i)
        return len(ids)

    def sweep(self, client) -> None:
        """Once per process: remove containers that a dead process of this host left behind."""
        with self.lock:
            if self.swept:
                return
            self.swept = True
        try:
            for c in client.containers.list(
                all=True, filters={"label": f"agentgym.host={socket.gethostname()}"}
            ):
                pid = int(c.labels.get("agentgym.pid", "0"))
                if pid > 0 and not _alive(pid):
                    _remove(client, c.id)
        except Exception:
            pass  # best effort: a leftover container only costs memory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


POOL = _Pool()
atexit.register(POOL.drain)


def pool_stats() -> dict[str, int]:
    """Counts since start: sessions served ``warm`` (a pooled container) and ``cold`` (a new
    one), containers ``kept`` for reuse and ``discarded`` (could not be reset), and ``idle`` now."""
    with POOL.lock:
        return {**POOL.stats, "idle": sum(len(v) for v in POOL.idle.values())}


class DockerSandbox(Sandbox):
    """A sandbox session in its own Docker container, lent from a warm pool.

    Args:
        limits: default limits of each run (memory, CPU, pids and disk also bound the container).
        image: the image to run (default ``DEFAULT_IMAGE``); it needs ``python3``, ``python`` and
            coreutils' ``timeout``.
        pull: pull ``image`` from its registry when the engine lacks it (otherwise that is an
            error that says how to build the default image).
        pool: idle containers to keep warm for later sessions with this image and limits
            (default ``POOL_SIZE``; 0 removes the container on close).
    """

    backend = "docker"
    max_input_bytes = MAX_PAYLOAD * 3 // 4 - 4096  # base64 and JSON around the bytes

    def __init__(
        self,
        limits: Limits | None = None,
        image: str | None = None,
        pull: bool = False,
        pool: int | None = None,
    ):
        super().__init__(limits)
        problem = docker_problem(None)
        if problem is not None:
            raise SandboxUnavailable(problem)
        import docker

        self.client = docker.from_env(timeout=30)
        self.image = image = image or DEFAULT_IMAGE
        self.pool = POOL_SIZE if pool is None else int(pool)
        if self.pool < 0:
            raise ValueError(f"pool must be 0 or more, got {pool}")
        lim = self.limits
        self._key = (image, lim.memory_mb, lim.cpus, lim.processes, lim.disk_mb)
        POOL.sweep(self.client)
        container_id = POOL.take(self._key) if self.pool > 0 else None
        self.warm = container_id is not None
        try:
            if container_id is None:
                container_id = self._start(image, pull)
            self.container = self.client.containers.get(container_id)
            if self.warm and self.container.status != "running":
                _remove(self.client, container_id)
                self.warm = False
                self.container = self.client.containers.get(self._start(image, pull))
        except docker.errors.DockerException as e:
            raise SandboxError(f"could not start a container from {image!r}: {e}") from e
        self._finalizer = weakref.finalize(self, _remove, self.client, self.container.id)
        if self.pool > 0:
            POOL.grow(self)

    def _start(self, image: str, pull: bool) -> str:
        import docker

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
        lim = self.limits
        container = self.client.containers.run(
            image,
            ["sleep", "infinity"],
            detach=True,
            init=True,  # docker-init as pid 1 reaps the orphans of every run
            user="0:0",  # init and sleep only; every run is an exec as USER, who cannot touch them
            network_mode="none",
            read_only=True,
            mem_limit=f"{lim.memory_mb}m",
            memswap_limit=f"{lim.memory_mb}m",
            nano_cpus=int(lim.cpus * 1e9),
            pids_limit=lim.processes + 4,  # + init, sleep, `timeout` and a clean-up exec
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs={
                "/work": f"rw,size={lim.disk_mb}m,uid=65534,gid=65534,mode=0755",
                "/tmp": f"rw,size={lim.disk_mb}m,uid=65534,gid=65534,mode=0755",
                "/opt/agentgym": f"rw,size={MAX_PAYLOAD * 5 // 4 >> 20}m,uid=65534,gid=65534,mode=0755",
            },
            working_dir="/work",
            labels={
                "agentgym.sandbox": "1",
                "agentgym.host": socket.gethostname(),
                "agentgym.pid": str(os.getpid()),
            },
        )
        return container.id

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
                reader.join(0.5)  # the stream ends just after the program, unless a daemon holds it
                if reader.is_alive():
                    self._kill_all()
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
            details={"container": self.container.id[:12], "warm": self.warm},
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

    def reset(self) -> bool:
        """Kill every process of the sandbox user, wipe what it can write and remove its IPC
        objects; True when the check after it finds nothing left."""
        cmd = ["sh", "-c", 'kill -9 -1; ipcrm --all 2>/dev/null; exec python3 -I -S -c "$0"', _RESET]
        for _ in range(2):  # a process killed a moment ago may still be on its way out
            try:
                res = self.container.exec_run(cmd, user=USER)
                # plain words, no ast or json: this runs in a background thread, and CPython 3.11's
                # AST conversion keeps one recursion counter for all threads (gh-106905)
                word, files, procs = res.output.decode().split()[-3:]
            except Exception:
                return False
            if res.exit_code == 0 and (word, files, procs) == ("left", "0", "0"):
                return True
        return False

    def close(self) -> None:
        """End the session: its container goes back to the pool when it resets clean (and the
        pool has room), otherwise it is removed. The reset runs in the background; the next
        session with the same image and limits waits for it rather than start a container."""
        if not self.closed:
            self.closed = True
            if self.pool > 0:
                POOL.give_back(self)  # reset in the background, overlapping the caller's next step
            else:
                self._finalizer()
        super().close()
