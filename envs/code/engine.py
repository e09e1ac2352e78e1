"""The Docker engine and the sandbox image, both made here with no registry.

    agentgym sandbox engine start     # start dockerd unless an engine answers; wait until it does
    agentgym sandbox build-image      # debootstrap a Debian root file system with python3, import it

The image is a minimal Debian (``debootstrap --variant=minbase``) with ``python3`` (and
``python`` naming it), from the Debian archive apt already uses. It is tagged
``agentgym-sandbox:<hash>``, where the hash covers the recipe and every installed package's
name and version, and ``agentgym-sandbox:latest``, the tag the docker backend runs. The root file
system goes into ``docker import`` as a tar with sorted names, zero times and numeric owners;
its Python byte code is compiled as unchecked-hash pycs first, which zero times leave valid (a
timestamp pyc would be stale, and every run on the read-only root would compile the standard
library again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

IMAGE = "agentgym-sandbox"
LATEST = f"{IMAGE}:latest"
SUITE = "bookworm"
PACKAGES = ["python3", "python-is-python3"]
RECIPE = (
    f"debootstrap --variant=minbase --include={','.join(PACKAGES)} {SUITE}; no apt lists, docs or caches; "
    "Python byte code compiled as unchecked-hash pycs"
)
"""what goes into the image's hash besides its package list"""
RECIPE_ID = hashlib.sha256(RECIPE.encode()).hexdigest()[:16]
"""the recipe's own hash, a label on the image: ``build-image`` rebuilds an image of another recipe"""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PRUNE = ["var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "var/log"]


def _client(timeout: int = 5):
    import docker

    client = docker.from_env(timeout=timeout)
    client.ping()
    return client


def engine_answers() -> bool:
    try:
        _client()
        return True
    except Exception:
        return False


def start_engine(wait: float = 60.0, log: str | os.PathLike[str] | None = None) -> str:
    """Start ``dockerd`` unless an engine already answers, and wait until it does.

    Returns what happened ("already running" or "started"); raises RuntimeError naming the fix
    when it cannot (dockerd missing, not root, no answer within ``wait`` seconds)."""
    if engine_answers():
        return "already running"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("no dockerd on PATH; install the engine: apt-get install docker.io")
    if os.geteuid() != 0:
        raise RuntimeError("starting dockerd needs root; run this as root or start the engine your own way")
    log = Path(log or Path(tempfile.gettempdir()) / "agentgym-dockerd.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [dockerd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if engine_answers():
            return "started"
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"dockerd exited with status {proc.returncode}; its log ({log}) ends:\n{tail}")
        time.sleep(0.5)
    raise RuntimeError(f"dockerd did not answer within {wait:.0f} s; see {log}")


def build_image(mirror: str = DEFAULT_MIRROR, force: bool = False, log=print) -> str:
    """Build the sandbox image (unless ``agentgym-sandbox:latest`` exists and not ``force``) and
    return its content-hash tag."""
    import docker

    client = _client(timeout=600)
    if not force:
        try:
            image = client.images.get(LATEST)
            if image.labels.get("agentgym.recipe") == RECIPE_ID:
                tags = [t for t in image.tags if t != LATEST]
                return tags[0] if tags else LATEST
            log(f"{LATEST} was built by another recipe; building it again")
        except docker.errors.ImageNotFound:
            pass
    if shutil.which("debootstrap") is None:
        raise RuntimeError("no debootstrap on PATH; install it: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root; run this as root")
    with tempfile.TemporaryDirectory(prefix="agentgym-rootfs-") as tmp:
        root = Path(tmp) / "root"
        log(f"debootstrap {SUITE} from {mirror} into {root} ...")
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            mirror,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"debootstrap failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}"
            )
        packages = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package}=${Version}\n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        digest = hashlib.sha256(
            (RECIPE + "\n" + "".join(sorted(packages.splitlines(True)))).encode()
        ).hexdigest()
        tag = f"{IMAGE}:{digest[:16]}"
        for rel in PRUNE:
            shutil.rmtree(root / rel, ignore_errors=True)
            (root / rel).mkdir(parents=True, exist_ok=True)
        libs = sorted(str(p.relative_to(root).as_posix()) for p in (root / "usr/lib").glob("python3*"))
        compiled = subprocess.run(
            ["chroot", str(root), "python3", "-m", "compileall", "-q", "-f"]
            + ["--invalidation-mode", "unchecked-hash", *(f"/{p}" for p in libs)],
            capture_output=True,
            text=True,
        )
        if compiled.returncode != 0:
            raise RuntimeError(f"compiling the image's Python byte code failed:\n{compiled.stderr[-2000:]}")
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--sort=name", "--mtime=@0", "--numeric-owner", "-c", "."],
            stdout=subprocess.PIPE,
        )
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CMD /bin/bash",
            f"LABEL agentgym.recipe={RECIPE_ID}",
        ]
        imported = subprocess.run(
            ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr[-1000:]}")
    client.images.get(tag).tag(IMAGE, "latest")
    log(f"built {tag} (and {LATEST}): {len(packages.splitlines())} packages")
    return tag
