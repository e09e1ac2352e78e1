"""The escape suite: each case is a program that tries to get out, run in a real sandbox. Every
case must be contained and reported, leave nothing running, and leave the host unchanged.

The docker variants run where a Docker engine answers; bwrap runs everywhere (and in CI).
"""

import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from agentgym.envs.code.sandbox import Limits, make_sandbox

from agentgym.testing import in_ci
from agentgym.types import tool_call

REPO = Path(__file__).resolve().parents[2]
HOME = Path.home()


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


def run(backend, code, **limits):
    with make_sandbox(backend, Limits(**{"timeout": 5.0, **limits})) as box:
        return box.run_python(code)


def assert_clean(backend, result, marker=None):
    """Nothing of the run is left on the host."""
    if backend == "bwrap":
        from agentgym.envs.code.bwrap import processes_of_uid

        assert processes_of_uid(result.details["uid"]) == []
    if marker is not None:
        assert processes_with(marker) == []


def test_tcp_to_a_host_listener_is_refused(backend):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("CONNECTED")
except OSError as e:
    print("refused", type(e).__name__)
"""
    r = run(backend, code)
    assert "refused" in r.stdout and "CONNECTED" not in r.stdout
    with pytest.raises(socket.timeout):
        server.accept()  # nobody ever knocked
    server.close()
    assert_clean(backend, r)


def test_host_unix_sockets_are_unreachable(backend, tmp_path):
    tag = secrets.token_hex(6)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0agentgym-{tag}")  # abstract sockets belong to a network namespace
    path = tmp_path / "host.sock"
    named = socket.socket(socket.AF_UNIX)
    named.bind(str(path))
    for server in (abstract, named):
        server.listen()
        server.settimeout(0.2)
    code = f"""
import socket
for address in ("\\0agentgym-{tag}", {str(path)!r}, "/run/docker.sock", "/var/run/docker.sock",
                "/run/dbus/system_bus_socket"):
    try:
        socket.socket(socket.AF_UNIX).connect(address)
        print("CONNECTED", address)
    except OSError as e:
        print("refused", type(e).__name__)
"""
    r = run(backend, code)
    assert r.stdout.count("refused") == 5 and "CONNECTED" not in r.stdout
    for server in (abstract, named):
        with pytest.raises(socket.timeout):
            server.accept()  # nobody ever knocked
        server.close()
    assert_clean(backend, r)


def test_no_dns_and_no_external_host(backend):
    code = """
import socket
for host in ("pypi.org", "example.com"):
    try:
        print("resolved", socket.getaddrinfo(host, 443))
    except OSError as e:
        print("no dns", type(e).__name__)
for ip in ("1.1.1.1", "8.8.8.8"):
    try:
        socket.create_connection((ip, 53), timeout=2)
        print("REACHED", ip)
    except OSError as e:
        print("unreachable", type(e).__name__)
print([n for _, n in socket.if_nameindex()])
"""
    r = run(backend, code)
    assert "resolved" not in r.stdout and "REACHED" not in r.stdout
    assert r.stdout.count("no dns") == 2 and r.stdout.count("unreachable") == 2
    assert_clean(backend, r)


def test_writes_to_the_host_go_nowhere(backend):
    tag = secrets.token_hex(6)
    targets = [
        REPO / f"escape_{tag}.txt",
        Path("/tmp") / f"escape_{tag}.txt",
        Path("/etc") / f"escape_{tag}",
        HOME / f"escape_{tag}",
    ]
    code = f"""
import os
for path in {[str(t) for t in targets]!r} + ["/usr/escape_{tag}"]:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("escaped")
        print("wrote", path)
    except OSError as e:
        print("blocked", path, type(e).__name__)
"""
    r = run(backend, code)
    assert r.exit_code == 0 and "blocked /usr/" in r.stdout
    for target in targets:
        assert not target.exists(), f"{target} appeared on the host"
    assert not Path(f"/usr/escape_{tag}").exists()
    assert_clean(backend, r)


def test_cannot_read_root_home_env_or_repository(backend, monkeypatch, tmp_path):
    secret = "agentgym-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("AGENTGYM_TEST_SECRET", secret)
    hidden_dir = tmp_path / ("cwd-" + secrets.token_hex(8))  # the host's working directory
    hidden_dir.mkdir()
    monkeypatch.chdir(hidden_dir)
    code = f"""
import glob, os
print(dict(os.environ))
envs = []
for p in glob.glob("/proc/[0-9]*/environ"):
    try:
        envs.append(open(p, "rb").read())
    except OSError:
        pass  # another user's process (docker: the container's init)
print(envs)
for path in ("/root", {str(HOME)!r}, {str(REPO)!r}, "/etc/shadow", "/etc/passwd", "/proc/1/environ"):
    try:
        if os.path.isdir(path):
            print(path, "LISTED", os.listdir(path))
        else:
            print(path, "READ", open(path).read()[:200])
    except OSError as e:
        print(path, "denied", type(e).__name__)
"""
    r = run(backend, code)
    assert "b'PATH=" in r.stdout  # the environments were read
    assert secret not in r.stdout and hidden_dir.name not in r.stdout
    assert "AGENTGYM_TEST_SECRET" not in r.stdout
    assert f"{REPO} LISTED" not in r.stdout and "/root LISTED" not in r.stdout
    assert "agentgym" not in r.stdout.split("{")[0]
    assert_clean(backend, r)


def test_another_episodes_files_are_invisible(backend):
    secret = "episode-secret-" + secrets.token_hex(8)
    holder = make_sandbox(backend, Limits(timeout=6))
    holder.write_file("mine.py", f"SECRET = {secret!r}\n")
    held = {}
    t = threading.Thread(target=lambda: held.update(r=holder.run_python("import time; time.sleep(3)")))
    t.start()
    time.sleep(0.5)
    code = f"""
import os
needle = {secret[:15]!r} + {secret[15:]!r}
hits = []
for root, dirs, files in os.walk("/"):
    if root.startswith(("/proc", "/sys", "/dev", "/usr")):
        dirs[:] = []
        continue
    for f in files:
        try:
            if needle.encode() in open(os.path.join(root, f), "rb").read(1 << 20):
                hits.append(os.path.join(root, f))
        except OSError:
            pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if needle.encode() in open(f"/proc/{{pid}}/cmdline", "rb").read():
                hits.append(pid)
        except OSError:
            pass
print("hits", hits)
"""
    r = run(backend, code, timeout=20)
    t.join()
    holder.close()
    assert r.stdout.strip() == "hits []"
    assert held["r"].exit_code == 0


def test_fork_bomb_is_stopped(backend):
    marker = "forkbomb" + secrets.token_hex(4)
    code = f"""
import os, sys
# {marker}
children = 0
try:
    while True:
        if os.fork() == 0:
            import time; time.sleep(30); os._exit(0)
        children += 1
except OSError as e:
    print("fork failed after", children, type(e).__name__, flush=True)
    sys.exit(1)
"""
    r = run(backend, code, processes=16)
    assert r.duration < 10
    assert "fork failed after" in r.stdout
    assert int(r.stdout.split()[3]) <= 16
    assert_clean(backend, r, marker)
    # the classic form: every process forks forever; the cap holds until the first process dies of it
    # (which ends the run) or the wall clock kills them all
    r = run(backend, f"import os\n# {marker}\nwhile True:\n    os.fork()", processes=16, timeout=2)
    assert r.limit in ("processes", "timeout") and r.duration < 10
    assert_clean(backend, r, marker)


def test_allocating_8_gb_fails_fast(backend):
    r = run(backend, "x = bytearray(8 << 30)\nprint('ALLOCATED')")
    assert r.limit == "memory" and "MemoryError" in r.stderr and "ALLOCATED" not in r.stdout
    assert r.duration < 5
    assert_clean(backend, r)


def test_memory_spread_over_many_processes_is_bounded(backend):
    code = """
import os, time
kids = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        block = bytearray(100 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(1)
        os._exit(0)
    kids.append(pid)
print("statuses", sorted(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids))
"""
    r = run(backend, code, memory_mb=128, disk_mb=32, timeout=20)
    if backend == "bwrap" and not r.details["cgroup"]:
        reason = "no writable cgroup v1 memory controller here: only per-process rlimits bound memory"
        if in_ci():  # CI machines have one; without it this bound is not tested at all
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    # 800 MiB asked for in all, against a bound of about 300 MiB for the whole run
    if backend == "bwrap":
        assert r.limit == "memory"  # read from the run's cgroup
    statuses = [int(x) for x in r.stdout.split("[")[1].rstrip("]\n").split(",")]
    assert statuses.count(-9) >= 3
    assert_clean(backend, r)


def test_filling_the_disk_stops_at_the_limits(backend):
    free_before = shutil.disk_usage("/").free
    code = """
import os
try:
    with open("big.bin", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20))
except OSError as e:
    print("big file stopped:", e.strerror, os.path.getsize("big.bin") >> 20, "MiB")
os.remove("big.bin")
n = 0
try:
    while True:
        with open(f"/tmp/part{n}", "wb") as f:
            f.write(b"y" * (4 << 20))
        n += 1
except OSError as e:
    print("many files stopped:", e.strerror, "after", n)
for d in ("/", "/dev", "/dev/shm", "/usr"):
    n = 0
    try:
        while n < 64:
            with open(f"{d}/fill{n}", "wb") as f:
                f.write(b"z" * (4 << 20))
            n += 1
        print(d, "UNBOUNDED")
    except OSError as e:
        print(d, "stopped after", n)
print("done")
"""
    r = run(backend, code, file_size_mb=8, disk_mb=32, timeout=15)
    assert "big file stopped: File too large 8 MiB" in r.stdout
    assert "many files stopped: No space left on device after" in r.stdout
    assert int(r.stdout.splitlines()[1].split()[-1]) <= 8
    assert "UNBOUNDED" not in r.stdout and r.stdout.endswith("done\n")
    assert shutil.disk_usage("/").free > free_before - (200 << 20)  # others may write meanwhile
    assert_clean(backend, r)


@pytest.mark.parametrize(
    "code", ["while True:\n    pass", "import time\ntime.sleep(60)"], ids=["busy", "sleep"]
)
def test_running_past_the_timeout_is_killed(backend, code):
    r = run(backend, code, timeout=1.5)
    assert r.limit == "timeout" and r.exit_code is not None and r.exit_code < 0
    assert r.duration < 6
    assert_clean(backend, r)


def test_daemon_does_not_outlive_the_run(backend):
    marker = "daemon" + secrets.token_hex(6)
    code = f"""
import os, signal, subprocess, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"], start_new_session=True)
    os._exit(0)
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)  # inherited by the child below
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"], start_new_session=True)
import time; time.sleep(0.5)
print("spawned")
"""
    r = run(backend, code)
    assert r.stdout.strip() == "spawned" and r.exit_code == 0
    assert_clean(backend, r, marker)


def test_killing_the_parent_is_contained(backend):
    marker = "killer" + secrets.token_hex(4)
    code = f"""
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"])
for pid in (os.getppid(), 1, -1):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent", pid, flush=True)
    except OSError as e:
        print("kill failed", pid, type(e).__name__, flush=True)
print("child", child.wait(), flush=True)
print("after kills")
"""
    r = run(backend, code)
    assert Path(f"/proc/{os.getppid()}").exists()  # the host side is untouched
    if backend == "bwrap":  # the run's pid 1 is bwrap's init, which ignores signals from inside
        assert r.exit_code == 0 and "child -9" in r.stdout and r.stdout.endswith("after kills\n")
    else:
        assert r.exit_code is not None
    assert_clean(backend, r, marker)


def test_ptrace_of_the_sandbox_init_is_contained(backend):
    marker = "tracer" + secrets.token_hex(4)
    code = f"""
import ctypes, os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"])
libc = ctypes.CDLL(None, use_errno=True)
for pid in (1, child.pid):
    print("attach", pid, libc.ptrace(16, pid, 0, 0), flush=True)  # PTRACE_ATTACH stops it
"""
    r = run(backend, code, timeout=2)
    # the run must end at its limit even with its init stopped, well before the 60-s sleeper; the
    # bound leaves room for docker exec on a loaded machine (17 s seen with a training run beside)
    assert r.exit_code is not None and r.duration < 30
    assert_clean(backend, r, marker)


def test_nothing_persists_between_runs(backend):
    tag = secrets.token_hex(6)
    plant = f"""
import os
for d in ("/work", "/tmp", "/dev/shm"):
    open(f"{{d}}/planted_{tag}", "w").write("x")
print("planted")
"""
    look = """
import glob
print("found", [p for d in ("/work", "/tmp", "/dev/shm") for p in glob.glob(d + "/planted_*")])
"""
    with make_sandbox(backend, Limits(timeout=10)) as box:
        assert box.run_python(plant).stdout == "planted\n"
        assert box.run_python(look).stdout == "found []\n"


_PLANT = """
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
tag = sys.argv[-1]
for d in ("/work", "/tmp", "/dev/shm"):
    open(f"{d}/planted_{tag}", "w").write("x")
q = libc.mq_open(f"/planted_{tag}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
shm = libc.shmget(int(tag[:6], 16), 4096, 0o1000 | 0o600)
subprocess.Popen(["sleep", "600"], start_new_session=True)
print("planted", q >= 0, shm >= 0)
"""

_FIND = """
import ctypes, glob, os, sys
libc = ctypes.CDLL(None, use_errno=True)
tag = sys.argv[-1]
files = [p for d in ("/work", "/tmp", "/dev/shm") for p in glob.glob(d + "/planted_*")]
q = libc.mq_open(f"/planted_{tag}".encode(), os.O_RDONLY, 0, None)
shm = libc.shmget(int(tag[:6], 16), 0, 0o600)
mine = {os.getpid(), os.getppid()}
procs = []
for p in os.listdir("/proc"):
    try:
        if p.isdigit() and int(p) not in mine and os.stat("/proc/" + p).st_uid == os.getuid():
            procs.append(open(f"/proc/{p}/cmdline", "rb").read())
    except OSError:
        pass
print("found", files, q >= 0, shm >= 0, procs)
"""


def test_nothing_persists_between_sessions(backend):
    """One episode's session leaves nothing for the next (files, POSIX and SysV IPC, processes):
    with docker the next session may be served by the same pooled container."""
    tag = secrets.token_hex(6)
    with make_sandbox(backend, Limits(timeout=10)) as box:
        box.write_file("plant.py", _PLANT.encode())
        r = box.run(["python", "plant.py", tag])
        assert r.stdout == "planted True True\n", r.stderr
    with make_sandbox(backend, Limits(timeout=10)) as box:
        box.write_file("find.py", _FIND.encode())
        r = box.run(["python", "find.py", tag])
        assert r.stdout == "found [] False False []\n", r.stderr


_SYSV = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
key = {key}
if sys.argv[-1] == "plant":
    made = [libc.shmget(key, 4096, 0o1000 | 0o600), libc.msgget(key, 0o1000 | 0o600), libc.semget(key, 1, 0o1000 | 0o600)]
    print("planted", all(i >= 0 for i in made))
else:
    found = [libc.shmget(key, 0, 0o600), libc.msgget(key, 0o600), libc.semget(key, 0, 0o600)]
    print("found", [i for i in found if i >= 0])
"""


def test_no_sysv_ipc_object_outlives_its_run(backend):
    """Shared memory, message queues and semaphores of one run are gone in the next (a channel
    between runs, and between episodes where a sandbox is reused)."""
    code = _SYSV.format(key=int(secrets.token_hex(3), 16) + 1)
    with make_sandbox(backend, Limits(timeout=10)) as box:
        box.write_file("ipc.py", code.encode())
        assert box.run(["python", "ipc.py", "plant"]).stdout == "planted True\n"
        assert box.run(["python", "ipc.py", "look"]).stdout == "found []\n"


def test_printing_100_mb_is_cut_short(backend):
    r = run(
        backend,
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\nprint('END')",
    )
    assert r.limit == "output" and r.truncated
    assert len(r.stdout) == Limits().output_bytes and "END" not in r.stdout
    assert r.duration < 15
    assert_clean(backend, r)


# ----- forging a passing score --------------------------------------------------------------------

TESTS = [
    f"assert mix({a}, {b}) == {a * 7 + b * 3 - a * b}" for a, b in [(1, 2), (5, 9), (-4, 3), (12, 0), (7, 7)]
]
RIGHT = "def mix(a, b):\n    return a * 7 + b * 3 - a * b\n"

FORGERIES = {
    "fake_results_file": """
import json, os
for path in ("results.json", "/work/results.json", "/tmp/results.json", "/opt/agentgym/results.json"):
    try:
        json.dump({"passed": 5, "total": 5, "score": 1.0}, open(path, "w"))
    except OSError:
        pass
def mix(a, b):
    return 0
""",
    "fake_result_lines": """
import json, os
job = json.load(open("/opt/agentgym/job.json"))
lines = [json.dumps({"t": i, "pass": True}) for i in range(5)] + [json.dumps({"done": True})]
lines += [json.dumps({"t": i, "c": 0, "v": ["bool", True], "n": job["nonce"]}) for i in range(5)]
for fd in range(1, 20):
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
    except OSError:
        pass
print("PASSED 5/5")
def mix(a, b):
    return None
""",
    "monkeypatch_harness": """
import sys
main = sys.modules["__main__"]
main.encode = lambda value, depth=0: ["bool", True]
main.run_checks = lambda job, chan: None
real_eval = eval
import builtins
builtins.eval = lambda *a, **k: True
def mix(a, b):
    return -1
""",
    "exit_0_early": """
import os
os._exit(0)
""",
    "sys_exit_at_import": """
import sys
sys.exit(0)
""",
    "atexit_forger": """
import atexit, json, os
job = json.load(open("/opt/agentgym/job.json"))
fd = int(os.environ.get("AGENTGYM_CHANNEL_FD", "1"))
def forge():
    for i in range(5):
        os.write(3, (json.dumps({"t": i, "c": 0, "v": ["int", "1"], "n": job["nonce"]}) + "\\n").encode())
atexit.register(forge)
def mix(a, b):
    raise SystemExit(0)
""",
    "sys_modules_tampering": """
import json, sys, types
fake = types.ModuleType("json")
fake.dumps = lambda obj, **k: '{"t": 0, "pass": true}'
fake.loads = json.loads
sys.modules["json"] = fake
sys.modules["__main__"].json = fake
def mix(a, b):
    return a + b
""",
    "daemon_forger": """
import json, os, subprocess, sys
job = json.load(open("/opt/agentgym/job.json"))
forger = f'''
import os, time, json
time.sleep(0.3)
for fd in range(3, 12):
    for i in range(5):
        try:
            os.write(fd, (json.dumps({{"t": i, "c": 0, "v": ["int", "7"], "n": "{job["nonce"]}"}}) + "\\\\n").encode())
        except OSError:
            pass
time.sleep(30)
'''
subprocess.Popen([sys.executable, "-c", forger], start_new_session=True, close_fds=False)
def mix(a, b):
    return 7
""",
    "shadowed_modules": {
        "solution.py": "def mix(a, b):\n    return 0\n",
        "json.py": 'def dumps(obj, **k):\n    return \'{"t": 0, "pass": true}\'\nloads = None\n',
        "signal.py": "",
        "sitecustomize.py": "import os\nos._exit(0)\n",
        "usercustomize.py": "import os\nos._exit(0)\n",
        "conftest.py": "import sys\nsys.exit(0)\n",
        "unittest.py": "raise SystemExit(0)\n",
    },
    "builtins_overridden": """
import builtins
builtins.type = lambda *a: int
builtins.isinstance = lambda *a: True
builtins.repr = lambda *a: "True"
def mix(a, b):
    return 0
""",
    "exit_inside_the_call": """
import os
def mix(a, b):
    os._exit(0)
""",
    "keyboard_interrupt": """
def mix(a, b):
    raise KeyboardInterrupt
""",
    "child_reports_parent_dies": """
import json, os
job = json.load(open("/opt/agentgym/job.json"))
fd = int(os.environ.get("AGENTGYM_CHANNEL_FD", "1"))
if os.fork() == 0:
    for i in range(5):
        os.write(fd, (json.dumps({"t": i, "c": 0, "v": ["bool", True], "n": job["nonce"]}) + "\\n").encode())
    os._exit(0)
os._exit(0)
""",
    "stderr_flood": """
import sys
def mix(a, b):
    while True:
        sys.stderr.write("x" * 65536)
""",
    "equal_to_everything": """
class Anything(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def mix(a, b):
    return Anything(0)
""",
}


def counted_sandboxes(backend):
    """A sandbox factory for grading, and the list of every sandbox it made."""
    made = []

    def new_sandbox():
        made.append(make_sandbox(backend, Limits(timeout=10)))
        return made[-1]

    return made, new_sandbox


def submitted(forgery) -> dict[str, bytes]:
    files = forgery if isinstance(forgery, dict) else {"solution.py": forgery}
    return {p: c.encode() for p, c in files.items()}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_scores_are_worthless(backend, name):
    from agentgym.envs.code.grading import compile_test, grade

    tests = [compile_test(t, "mix") for t in TESTS]
    made, new_sandbox = counted_sandboxes(backend)
    forged = grade(submitted(FORGERIES[name]), tests, entry_point="mix", new_sandbox=new_sandbox)
    assert forged.error is None
    assert forged.score == 0.0, [o.detail for o in forged.outcomes]
    assert len(made) == 2 and all(b.closed for b in made)  # two fresh sandboxes, both closed
    assert not any(p.exists() for p in (REPO / "results.json", Path("/tmp/results.json")))
    if backend == "bwrap":
        assert_clean(backend, forged.calls_run)
    honest = grade({"solution.py": RIGHT.encode()}, tests, entry_point="mix", new_sandbox=new_sandbox)
    assert honest.score == 1.0


NO_VALUE = {
    "nothing_submitted": None,
    "hangs": "import time\ndef mix(a, b):\n    time.sleep(60)\n",
    "swallows_its_timeout": (
        "import time\ndef mix(a, b):\n    try:\n        time.sleep(60)\n"
        "    except BaseException:\n        return 0\n"
    ),
}


@pytest.mark.parametrize("name", sorted(NO_VALUE))
def test_a_call_without_a_value_never_passes(backend, name):
    """No value (nothing imported, a hang, a timeout the function caught) fails every test, even
    one that accepts any exception; an exception the function really raised is judged as Python would."""
    from agentgym.envs.code.grading import compile_test, grade

    tests = [
        compile_test(t, "mix")
        for t in (
            "assert raises(BaseException, lambda: mix(1, 2))",
            "assert raises(Exception, lambda: mix(3, 4))",
            "assert mix(5, 6) == 0",
        )
    ]
    code = NO_VALUE[name]
    files = {} if code is None else {"solution.py": code.encode()}
    box = lambda: make_sandbox(backend, Limits(timeout=10))  # noqa: E731
    result = grade(files, tests, entry_point="mix", new_sandbox=box, test_timeout=0.5)
    assert result.error is None and result.passed == 0, [o.detail for o in result.outcomes]
    exits = grade(
        {"solution.py": b"def mix(a, b):\n    raise SystemExit(0)\n"},
        tests,
        entry_point="mix",
        new_sandbox=box,
    )
    assert [o.passed for o in exits.outcomes] == [True, False, False]  # SystemExit is no Exception


def test_a_flood_of_values_is_cut_to_what_the_check_stage_carries(backend):
    from agentgym.envs.code.grading import compile_test, grade

    tests = [compile_test(f"assert mix({i}, 0) == [{i}] * 25000", "mix") for i in range(6)]
    inputs = []

    def new_sandbox():
        box = make_sandbox(backend, Limits(timeout=20))
        box.max_input_bytes = 1 << 20  # as small as a docker run's input
        run_box = box.run

        def run(argv, **kw):
            inputs.append(sum(len(d) for d in kw["readonly_files"].values()))
            return run_box(argv, **kw)

        box.run = run
        return box

    # each value is right and ~350 kB as JSON: two fit the check stage, the other four are cut
    flood = b"def mix(a, b):\n    return [a] * 25000\n"
    result = grade({"solution.py": flood}, tests, entry_point="mix", new_sandbox=new_sandbox)
    assert result.error is None and [o.passed for o in result.outcomes] == [True] * 2 + [False] * 4
    assert "returned <value past the size limit object>" in result.outcomes[2].detail
    assert inputs[1] < 1 << 20  # what the check stage was given


def test_paths_that_would_break_the_sandbox_are_refused(bwrap_ready):
    """A path too long for the file system or the command line must be the model's error (a tool
    message), never a sandbox failure: that would turn the episode into env_error, out of training."""
    import agentgym

    env = agentgym.make("code/python_functions-v0", backend="bwrap", timeout=4)
    env.reset(seed=0, options={"task_id": "clamp"})
    for path in ("a" * 300 + ".py", "ab/" * 50_000 + "x.py", "\ud800.py"):
        call = tool_call("write_file", {"path": path, "content": "x = 1"})
        obs, *_ = env.step({"role": "assistant", "content": "", "tool_calls": [call]})
        assert obs[0]["content"].startswith("Error: write_file raised ValueError"), obs[0]["content"][:200]
    obs, reward, done, _, info = env.step(
        {"role": "assistant", "content": "", "tool_calls": [tool_call("submit", {})]}
    )
    assert done and reward == 0.0 and info["status"] == "ok"
    env.close()


def test_concurrent_runs_never_share_a_uid(monkeypatch):
    from agentgym.envs.code import bwrap

    draws = iter([5, 5, 9, 9, 12])
    monkeypatch.setattr(bwrap.secrets, "randbelow", lambda n: next(draws))
    monkeypatch.setattr(bwrap, "processes_of_uid", lambda uid: [1] if uid == bwrap.UID_RANGE[0] + 9 else [])
    first = bwrap.claim_uid()
    second = bwrap.claim_uid()  # 5 is held, 9 has a live process on the host
    assert (first, second) == (bwrap.UID_RANGE[0] + 5, bwrap.UID_RANGE[0] + 12)
    bwrap.release_uid(first)
    bwrap.release_uid(second)


def test_hidden_tests_and_the_package_are_out_of_reach(backend):
    import agentgym.envs.code.tasks as tasks_module

    hidden = tasks_module.SHIPPED
    code = f"""
import os
print("exists", os.path.exists({str(hidden)!r}))
try:
    import agentgym
    print("IMPORTED", agentgym.__file__)
except ImportError:
    print("no agentgym")
"""
    r = run(backend, code)
    assert r.stdout.split() == ["exists", "False", "no", "agentgym"]
    assert_clean(backend, r)


def grade_program(files, program, **how):
    """The outcome of the check program alone, or the infrastructure error."""
    from agentgym.envs.code.grading import grade

    result = grade(files, [], program=program, **how)
    return result.error or result.outcomes[0]


PROGRAM = """
import random

def check(candidate):
    for a, b in [(1, 2), (5, 9), (-4, 3), (12, 0), (7, 7)]:
        assert candidate(a, b) == a * 7 + b * 3 - a * b
    for _ in range(30):
        a, b = random.randint(-99, 99), random.randint(-99, 99)
        assert candidate(a, b) == a * 7 + b * 3 - a * b, f"mix({a}, {b})"
"""
PROGRAM_FORGERIES = {
    **FORGERIES,
    "fake_program_verdict": """
import json, os
job = json.load(open("/opt/agentgym/job.json"))
lines = [json.dumps({"pass": True, "error": "", "calls": 35}), json.dumps({"done": True})]
lines += [json.dumps({"k": k, "v": ["int", "11"], "n": job["nonce"]}) for k in range(40)]
for fd in range(1, 20):
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
    except OSError:
        pass
def mix(a, b):
    return 0
""",
    "patches_random": """
import random
random.seed = lambda *a, **k: None
random.randint = lambda a, b: 0
def mix(a, b):
    return 0 if (a, b) == (0, 0) else None
""",
}


@pytest.mark.parametrize("name", sorted(PROGRAM_FORGERIES))
def test_forged_check_programs_are_worthless(backend, name):
    """A benchmark's check(candidate), run as written, with loops and unseeded randomness: the
    program runs where the submission is not, which sees only argument lists and can claim only
    return values; every forgery fails, and the honest function passes."""
    made, new_sandbox = counted_sandboxes(backend)
    forged = grade_program(
        submitted(PROGRAM_FORGERIES[name]), PROGRAM, entry_point="mix", new_sandbox=new_sandbox
    )
    assert not isinstance(forged, str), forged
    assert not forged.passed, forged.detail
    assert made and all(b.closed for b in made)
    honest = grade_program(
        {"solution.py": RIGHT.encode()}, PROGRAM, entry_point="mix", new_sandbox=new_sandbox
    )
    assert not isinstance(honest, str) and honest.passed, honest
    # right on the five fixed pairs, wrong on most random ones: the loop really runs
    wrong = RIGHT.replace("- a * b", "- a * b + (a < -20)")
    out = grade_program({"solution.py": wrong.encode()}, PROGRAM, entry_point="mix", new_sandbox=new_sandbox)
    assert not out.passed and "an assertion failed" in out.detail


def test_the_check_program_never_reaches_the_submission(backend):
    """The submission searches every place it can read for the check program's text (a marker
    only the program holds) and answers whether it found it; the program asserts it did not."""
    marker = "MARKER-" + secrets.token_hex(8)
    program = f"""
def check(candidate):
    secret = "{marker}"
    assert candidate("look") == "nothing", "the submission saw the check program"
    assert len(secret) == 23
"""
    searcher = """
import os
def hunt(_):
    needle = bytes.fromhex("NEEDLE_HEX")
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as f:
                    if needle in f.read():
                        return f"found in /proc/{pid}/{part}"
            except OSError:
                pass
    for root in ["/opt", "/work", "/tmp", "/run", "/dev/shm", "/var/tmp", "/home", "/root"]:
        for dirpath, dirs, files in os.walk(root):
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        if needle in f.read(1 << 20):
                            return "found " + os.path.join(dirpath, name)
                except OSError:
                    pass
    for name in os.environ.values():
        if needle.decode() in name:
            return "found in the environment"
    return "nothing"
""".replace("NEEDLE_HEX", marker.encode().hex())
    box = lambda: make_sandbox(backend, Limits(timeout=30))  # noqa: E731
    files = {"solution.py": searcher.encode()}
    out = grade_program(files, program, entry_point="hunt", new_sandbox=box, test_timeout=20)
    assert not isinstance(out, str) and out.passed, out
    files["notes.txt"] = marker.encode()  # the search does find the marker where it can read it
    leaked = grade_program(files, program, entry_point="hunt", new_sandbox=box, test_timeout=20)
    assert not leaked.passed and "an assertion failed" in leaked.detail
