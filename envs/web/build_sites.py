"""Build the shipped sites: write their files, serve them on 127.0.0.1, record them into HAR.

Run ``python -m agentgym.envs.web.build_sites [--out DIR] [NAME ...]`` (default: every site into
``envs/web/sites/``). Each site directory gets ``site.har``, ``site.json`` (topology) and
``tasks.json`` (its task templates, instantiated). The HTTP server only lives while recording;
replay never needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import tempfile
import threading
from pathlib import Path

from agentgym.envs.web.record import RecordConfig, record_site
from agentgym.envs.web.sitegen import SITES

SITES_DIR = Path(__file__).parent / "sites"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serve_dir(root: str | Path):
    """Serve ``root`` on 127.0.0.1 at a free port for the duration; yields the base URL."""

    def handler(*args, **kwargs):
        return _Quiet(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_files(files: dict[str, str], root: Path) -> None:
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")


def build_site(name: str, out_dir: str | Path, log=print) -> dict:
    """Generate, serve and record the site ``name`` into ``out_dir``; returns its topology."""
    if name not in SITES:
        raise ValueError(f"no site {name!r}; the sites are {', '.join(SITES)}")
    make, origin = SITES[name]
    files, tasks = make()
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        write_files(files, Path(tmp))
        with serve_dir(tmp) as base:
            config = RecordConfig(crawl_depth=10, delay=0.0, origin_alias=origin)
            topo = asyncio.run(record_site([base + "/"], out, config, log=lambda s: None))
    (out / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log(
        f"{name}: {len(topo['pages'])} pages, {len(tasks)} tasks, HAR {(out / 'site.har').stat().st_size} bytes -> {out}"
    )
    return topo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(SITES), help="sites to build (default: all)")
    parser.add_argument("--out", default=str(SITES_DIR), help="parent directory of the site directories")
    args = parser.parse_args(argv)
    for name in args.names:
        build_site(name, Path(args.out) / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
