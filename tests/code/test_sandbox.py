"""The sandbox interface on real backends: files, limits, reporting, and backend selection."""

import pytest
from agentgym.envs.code.sandbox import (
    INSTALL_HELP,
    Limits,
    SandboxUnavailable,
    check_path,
    make_sandbox,
    resolve_backend,
)


def test_files_are_visible_and_runs_are_fresh(backend):
    with make_sandbox(backend, Limits(timeout=20)) as box:
        box.write_file("pkg/helper.py", "VALUE = 41\n")
        r = box.run_python(
            "from pkg.helper import VALUE\nprint(VALUE + 1)\nopen('scratch.txt', 'w').write('x')"
        )
        assert (r.stdout, r.exit_code, r.limit) == ("42\n", 0, None)
        r2 = box.run_python("import os\nprint(sorted(os.listdir('.')))")
        assert "scratch.txt" not in r2.stdout and "pkg" in r2.stdout
        assert box.read_file("pkg/helper.py") == "VALUE = 41\n"


def test_exit_code_stderr_and_uid(backend):
    with make_sandbox(backend, Limits(timeout=20)) as box:
        r = box.run_python("import os, sys\nprint(os.getuid())\nprint('bad', file=sys.stderr)\nsys.exit(3)")
        assert r.exit_code == 3 and r.limit is None and not r.ok
        assert r.stderr == "bad\n"
        assert int(r.stdout) != 0  # never root


def test_output_is_cut_to_the_kept_size(backend):
    with make_sandbox(backend, Limits(timeout=20, output_bytes=1000)) as box:
        r = box.run_python("print('x' * 5000)")
        assert r.truncated and len(r.stdout) == 1000 and r.limit is None


def test_paths_outside_the_work_directory_are_refused():
    for bad in ("/etc/passwd", "../x.py", "a/../../x", "", ".agentgym_main.py"):
        with pytest.raises(ValueError):
            check_path(bad)
    assert check_path("a/b/../c.py") == "a/c.py"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="processes"):
        Limits(processes=0)


def test_auto_picks_a_working_backend(bwrap_ready):
    from agentgym.envs.code.docker_backend import docker_problem

    assert resolve_backend("auto") == ("docker" if docker_problem() is None else "bwrap")
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        resolve_backend("chroot")


def test_no_backend_names_both_install_routes(monkeypatch):
    import agentgym.envs.code.sandbox as sb

    monkeypatch.setattr(sb, "backend_problem", lambda name, image=None, pull=False: f"{name} is missing here")
    with pytest.raises(SandboxUnavailable) as e:
        resolve_backend("auto")
    assert INSTALL_HELP in str(e.value)
    assert "apt-get install bubblewrap" in str(e.value) and "agentgym[sandbox]" in str(e.value)


def test_cli_runs_a_file_and_reports_json(bwrap_ready, tmp_path, capsys):
    import json

    from agentgym.cli import main

    f = tmp_path / "prog.py"
    f.write_text("print('hello from the sandbox')\nraise SystemExit(4)\n")
    rc = main(["sandbox", "run", "--backend", "bwrap", "--timeout", "20", "--json", str(f)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["stdout"] == "hello from the sandbox\n" and out["exit_code"] == 4 and out["backend"] == "bwrap"
    f.write_text("while True: pass\n")
    rc = main(["sandbox", "run", "--backend", "bwrap", "--timeout", "1", str(f)])
    text = capsys.readouterr().out
    assert rc == 1 and "limit:     timeout" in text


def test_docker_container_is_removed_on_close_even_after_an_error(docker_engine):
    import docker

    client = docker.from_env()
    box = make_sandbox("docker", Limits(timeout=10), pool=0)
    cid = box.container.id
    with pytest.raises(ValueError):
        box.run(["python", "-c", "pass"], extra_files={"../x": b""})
    attrs = client.api.inspect_container(cid)
    assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["NetworkMode"] == "none"
    assert attrs["HostConfig"]["Init"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
    box.close()
    assert not client.containers.list(all=True, filters={"id": cid})


_DIRTY = """
import ctypes, os, subprocess
os.makedirs("/work/locked/inner")
os.chmod("/work/locked", 0)
for d in ("/work", "/tmp", "/dev/shm", "/dev/mqueue", "/opt/agentgym"):
    open(d + "/planted", "w").write("x")
subprocess.Popen(["sleep", "600"], start_new_session=True)
libc = ctypes.CDLL(None, use_errno=True)
print("planted", libc.shmget(0x5EED, 4096, 0o1000 | 0o600) >= 0)
"""

_LOOK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
files = [os.path.join(d, n) for d in ("/work", "/tmp", "/dev/shm", "/dev/mqueue", "/opt/agentgym") for n in os.listdir(d)]
mine = {os.getpid(), os.getppid()}
procs = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine and os.stat("/proc/" + p).st_uid == os.getuid()]
print(sorted(f for f in files if "agentgym_main" not in f), procs, libc.shmget(0x5EED, 0, 0o600))
"""


def test_the_warm_pool_lends_a_reset_container_to_one_session_at_a_time(docker_engine):
    """A closed session's container serves a later session with the same image and limits, with
    nothing of the last one left in it (files, unreadable directories, daemons, IPC); two open
    sessions never share one, other limits get another container, and none outlives the pool."""
    import os

    from agentgym.envs.code.docker_backend import POOL, DockerSandbox

    POOL.drain()
    limits = Limits(timeout=10, memory_mb=384)
    first = DockerSandbox(limits, pool=2)
    assert not first.warm
    r = first.run_python(_DIRTY)
    assert r.stdout == "planted True\n", r.stderr
    cid = first.container.id
    first.close()
    POOL.settle()
    second, third = DockerSandbox(limits, pool=2), DockerSandbox(limits, pool=2)
    assert second.warm and third.warm and second.container.id != third.container.id
    assert cid in (second.container.id, third.container.id)
    for box in (second, third):
        assert box.run_python(_LOOK).stdout == "[] [] -1\n"
    other = DockerSandbox(Limits(timeout=10, memory_mb=256), pool=2)
    assert not other.warm and other.container.id not in (second.container.id, third.container.id)
    assert other.client.api.inspect_container(other.container.id)["HostConfig"]["Memory"] == 256 << 20
    for box in (second, third, other):
        box.close()
    assert POOL.drain() >= 3
    assert not other.client.containers.list(all=True, filters={"label": f"agentgym.pid={os.getpid()}"})


def test_a_container_that_cannot_be_reset_is_removed(docker_engine):
    import docker
    from agentgym.envs.code.docker_backend import POOL, DockerSandbox, pool_stats

    POOL.drain()
    box = DockerSandbox(Limits(timeout=10), pool=2)
    cid = box.container.id
    box.container.kill()  # the reset cannot run: the container must not be lent again
    before = pool_stats()["discarded"]
    box.close()
    POOL.settle()
    assert pool_stats()["discarded"] == before + 1
    assert all(cid not in ids for ids in POOL.idle.values())
    assert not docker.from_env().containers.list(all=True, filters={"id": cid})


def test_containers_of_a_killed_process_are_swept(docker_engine):
    """A process killed before its atexit hook leaves pooled containers behind; the next pool on
    this host removes them."""
    import socket
    import subprocess
    import sys

    import docker
    from agentgym.envs.code.docker_backend import _Pool

    code = (
        "import os\nfrom agentgym.envs.code.docker_backend import DockerSandbox\n"
        "box = DockerSandbox(pool=2)\nbox.close()\nprint(box.container.id, flush=True)\nos._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    cid = out.stdout.strip()
    client = docker.from_env()
    leftover = client.containers.get(cid)
    assert leftover.labels["agentgym.host"] == socket.gethostname()
    _Pool().sweep(client)
    assert not client.containers.list(all=True, filters={"id": cid})


def test_session_files_are_capped_and_clashes_refused():
    from agentgym.envs.code.sandbox import MAX_TOTAL_BYTES, Sandbox

    box = Sandbox()
    box.write_file("a.py", "x" * (MAX_TOTAL_BYTES // 2))
    with pytest.raises(ValueError, match="for all files together"):
        box.write_file("b.py", "y" * (MAX_TOTAL_BYTES // 2 + 1))
    box.write_file("a.py", "small")  # replacing a file frees its bytes
    box.write_file("b.py", "y" * (MAX_TOTAL_BYTES // 2 + 1))
    with pytest.raises(ValueError, match="clashes"):
        box.write_file("a.py/c.py", "z")
    with pytest.raises(FileNotFoundError, match="files: a.py, b.py"):
        box.read_file("missing.py")


def test_the_docker_backend_never_pulls_unless_asked(docker_engine):
    """A missing image is an error that says how to get it; the default one names build-image."""
    from agentgym.envs.code.docker_backend import DEFAULT_IMAGE, DockerSandbox, docker_problem

    missing = "agentgym-sandbox-missing:nowhere"
    with pytest.raises(SandboxUnavailable, match="no image 'agentgym-sandbox-missing:nowhere'.*pull=True"):
        DockerSandbox(image=missing)
    assert "docker pull" in docker_problem(missing)
    with pytest.raises(SandboxUnavailable, match="cannot run: .*no image"):
        make_sandbox("docker", image=missing)
    assert resolve_backend("auto", image=missing) == "bwrap"  # auto falls back: it would have pulled
    assert docker_problem(DEFAULT_IMAGE) is None


def test_the_image_is_tagged_by_its_content_hash(docker_engine):
    import docker
    from agentgym.envs.code.engine import IMAGE, LATEST, RECIPE_ID

    tags = docker.from_env().images.get(LATEST).tags
    hashed = [t for t in tags if t != LATEST]
    assert hashed and all(t.startswith(f"{IMAGE}:") and len(t.split(":")[1]) == 16 for t in hashed)
    assert docker.from_env().images.get(LATEST).labels["agentgym.recipe"] == RECIPE_ID


def test_the_images_byte_code_stays_valid_on_its_read_only_root(docker_engine):
    """Zero file times would make timestamp pycs stale (every run compiling the standard library
    again); the image's are unchecked-hash pycs (PEP 552 flags 0b01)."""
    code = (
        "import base64, importlib.util, json\n"
        "for m in (base64, json):\n"
        "    print(int.from_bytes(open(importlib.util.cache_from_source(m.__file__), 'rb').read(8)[4:8], 'little'))"
    )
    with make_sandbox("docker") as box:
        assert box.run_python(code).stdout.split() == ["1", "1"]


def test_engine_start_and_build_image_are_safe_to_run_again(docker_engine, capsys):
    from agentgym.cli import main

    assert main(["sandbox", "engine", "start"]) == 0
    assert main(["sandbox", "engine", "status"]) == 0
    assert main(["sandbox", "build-image"]) == 0  # the image exists: nothing is built
    out = capsys.readouterr().out
    assert "docker engine: already running" in out and "docker engine: answers" in out
    assert "image: agentgym-sandbox:" in out and "debootstrap" not in out


@pytest.mark.parametrize("size", [10, 2_000_000, 7_000_000])
def test_large_inputs_arrive_whole(backend, size):
    """Megabytes of grader values reach a run intact (docker: past execve's ~2 MB environment cap,
    staged on the run's tmpfs), and nothing is left staged afterwards."""
    import hashlib
    import os

    data = os.urandom(size)
    with make_sandbox(backend) as box:
        box.write_file(
            "main.py",
            b"import hashlib, os\nprint(hashlib.sha256(open('/opt/agentgym/v.bin', 'rb').read()).hexdigest())\nprint(os.path.exists('/opt/agentgym/.stage'))",
        )
        for _ in range(2):
            r = box.run(["python", "main.py"], readonly_files={"/opt/agentgym/v.bin": data})
            assert r.exit_code == 0, r.stderr
            assert r.stdout.split() == [hashlib.sha256(data).hexdigest(), "False"]
