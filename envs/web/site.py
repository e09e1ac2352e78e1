"""A cached site on disk: its HAR, its topology (page graph) and its tasks, plus answer checks.

A site directory holds ``site.har`` (the recording; or ``site.har.gz``), ``site.json`` (pages, titles, links, forms)
and optionally ``tasks.json``; a recorded site without ``tasks.json`` gets information-seeking
tasks made from its pages' tables and definition lists (``agentgym.envs.web.facts``), or, when
its pages state no such facts, navigation tasks made from its topology ("open the page titled
T, then answer with its title", whose answer is in the question).

>>> normalize_answer("  $1,234.50 ") == normalize_answer("1234.5")
True
>>> normalize_answer("The  Amber KETTLE.")
'the amber kettle'
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import random
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin

SITES_DIR = Path(__file__).parent / "sites"

_NUMBER = re.compile(r"[$€£]?\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*(?:km|of 5|out of 5)?")


def normalize_answer(text: str) -> str:
    """Case, whitespace, trailing punctuation and number formats (``$1,234.50`` = ``1234.5``) folded."""
    t = " ".join(str(text).strip().lower().split()).strip(" .!;:\"'")
    m = _NUMBER.fullmatch(t)
    if m:
        return f"{float(m.group(1).replace(',', '')):f}".rstrip("0").rstrip(".")
    return t


@dataclass
class Site:
    """A cached site: where its files are and what its pages link to."""

    name: str
    root: Path
    origin: str
    start_url: str
    pages: dict[str, dict]
    tasks: list[dict] = field(default_factory=list)

    @functools.cached_property
    def har(self) -> Path:
        """The HAR file: ``site.har``, or ``site.har.gz`` unpacked once into the cache
        (``$AGENTGYM_CACHE/har`` or ``~/.cache/agentgym/har``; Playwright replays a plain file)."""
        plain = self.root / "site.har"
        packed = self.root / "site.har.gz"
        if plain.exists() or not packed.exists():
            return plain
        data = packed.read_bytes()
        cache = Path(os.environ.get("AGENTGYM_CACHE") or Path.home() / ".cache" / "agentgym") / "har"
        target = cache / f"{self.name}-{hashlib.sha256(data).hexdigest()[:16]}.har"
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(gzip.decompress(data))
            os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, site: str | Path, generated: bool = False) -> Site:
        """A shipped site by name (``shop``, ``wiki``, ``pydocs``) or any recorded site directory;
        ``generated`` makes its tasks from its pages even when it has a ``tasks.json``."""
        root = Path(site)
        if not (root / "site.json").exists():
            shipped = SITES_DIR / str(site)
            if (shipped / "site.json").exists():
                root = shipped
            else:
                raise FileNotFoundError(
                    f"no cached site at {site!r} (need site.json and site.har); record one with "
                    "`agentgym web record URL --out DIR`, or use a shipped site: shop, wiki, pydocs"
                )
        if not (root / "site.har").exists() and not (root / "site.har.gz").exists():
            raise FileNotFoundError(
                f"{root} has site.json but no site.har; record it again with `agentgym web record`"
            )
        topo = json.loads((root / "site.json").read_text(encoding="utf-8"))
        site_obj = cls(root.name, root, topo["origin"], topo["start_url"], topo["pages"])
        tasks_file = root / "tasks.json"
        if tasks_file.exists() and not generated:
            site_obj.tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
        else:
            site_obj.tasks = _generated_tasks(site_obj)
        return site_obj

    def url(self, path_or_url: str) -> str:
        return urldefrag(urljoin(self.origin + "/", path_or_url))[0]

    def shortest_path(self, src: str, dst: str) -> list[tuple[str, str]] | None:
        """The fewest link clicks from ``src`` to ``dst`` as ``[(link text, url), ...]``; None if unreachable."""
        src, dst = self.url(src), self.url(dst)
        if src == dst:
            return []
        prev: dict[str, tuple[str, str, str]] = {}
        queue = deque([src])
        seen = {src}
        while queue:
            here = queue.popleft()
            for text, target in self.pages.get(here, {}).get("links", []):
                if target in seen or target not in self.pages or not text:
                    continue
                seen.add(target)
                prev[target] = (here, text, target)
                if target == dst:
                    path = []
                    node = dst
                    while node != src:
                        before, t, u = prev[node]
                        path.append((t, u))
                        node = before
                    return path[::-1]
                queue.append(target)
        return None

    def navigation_tasks(self) -> list[dict]:
        """Tasks for a recorded site with no task list: reach a page (2+ clicks away) and name it."""
        tasks = []
        for i, (url, page) in enumerate(sorted(self.pages.items())):
            path = self.shortest_path(self.start_url, url)
            if path is None or len(path) < 1 or not page.get("title"):
                continue
            tasks.append(
                dict(
                    id=f"nav-{i}",
                    kind="navigation",
                    prompt=f"Find the page titled {page['title']!r} and answer with its title.",
                    answer=page["title"],
                    plan=[{"visit": url}],
                    final_url=url,
                )
            )
        return tasks

    def task(self, task_id: str) -> dict:
        for t in self.tasks:
            if t["id"] == task_id:
                return t
        raise KeyError(
            f"site {self.name!r} has no task {task_id!r}; ids look like {self.tasks[0]['id']!r}"
            if self.tasks
            else f"site {self.name!r} has no tasks"
        )

    def composite(self, k: int, index: int) -> list[dict]:
        """The ``index``-th composite of ``k`` distinct subtasks (deterministic)."""
        if not 1 <= k <= len(self.tasks):
            raise ValueError(f"subtasks must be between 1 and {len(self.tasks)}, got {k}")
        return random.Random(f"{self.name}-{k}-{index}").sample(self.tasks, k)


_GENERATED: dict[tuple, list[dict]] = {}
"""tasks made from a recorded site's pages, by (site directory, sizes and times of its files): each
env instance of a run (one per worker) would otherwise make them again"""


def _generated_tasks(site: Site) -> list[dict]:
    import copy

    from agentgym.envs.web.facts import generate_tasks

    stamps = []
    for name in ("site.json", "site.har", "site.har.gz"):
        path = site.root / name
        if path.exists():
            st = path.stat()
            stamps.append((name, st.st_size, st.st_mtime_ns))
    key = (str(site.root.resolve()), tuple(stamps))
    if key not in _GENERATED:
        _GENERATED[key] = generate_tasks(site) or site.navigation_tasks()
    return copy.deepcopy(_GENERATED[key])
