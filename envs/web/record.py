"""Record a live site into a cached site directory: a HAR archive plus its topology.

A same-origin breadth-first crawl from the start URLs, ``crawl_depth`` links deep, waiting
``delay`` seconds between page loads and skipping what the site's ``robots.txt`` disallows.
Every response the pages load goes into ``site.har`` (Playwright's ``record_har``, bodies
embedded); ``site.json`` holds the topology: each page's title, its links and its forms, as the
rendered page shows them. Run it as ``agentgym web record URL --crawl-depth 2 --out SITE_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import urllib.robotparser
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

from agentgym.envs.web.browser import launch_browser

USER_AGENT = "agentgym-recorder/0.1"

_EXTRACT_JS = """() => ({
  title: document.title,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => [a.innerText.trim(), a.href]),
  forms: Array.from(document.querySelectorAll('input, select, textarea, button')).map(e => ({
    tag: e.tagName.toLowerCase(), id: e.id || '', name: e.getAttribute('name') || '',
    label: e.getAttribute('aria-label') || (e.labels && e.labels[0] ? e.labels[0].innerText.trim() : '') || e.innerText.trim(),
    options: e.tagName === 'SELECT' ? Array.from(e.options).map(o => o.text) : []})),
})"""


@dataclass
class RecordConfig:
    crawl_depth: int = 2
    """links to follow from the start URLs (0 = the start pages only)"""
    delay: float = 0.5
    """seconds to wait between page loads (politeness; a longer Crawl-delay in robots.txt wins)"""
    max_pages: int = 500
    """stop after this many pages"""
    respect_robots: bool = True
    """skip URLs the site's robots.txt disallows for our user agent"""
    origin_alias: str | None = None
    """replay the site under this origin instead of the recorded one (e.g. http://shop.agentgym.test)"""

    def __post_init__(self) -> None:
        if self.crawl_depth < 0:
            raise ValueError(f"crawl_depth must be >= 0, got {self.crawl_depth}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")


def origin_of(url: str) -> str:
    """``http://a.b:8/x?y`` -> ``http://a.b:8``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _robots(origin: str) -> urllib.robotparser.RobotFileParser:
    rp = urllib.robotparser.RobotFileParser()
    try:
        req = urllib.request.Request(origin + "/robots.txt", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(req, timeout=10) as resp:
            rp.parse(resp.read().decode("utf-8", "replace").splitlines())
    except urllib.error.HTTPError as e:
        rp.parse([] if e.code >= 400 else ["User-agent: *", "Disallow: /"])
    except (urllib.error.URLError, OSError):
        rp.parse([])
    return rp


def politeness_delay(config: RecordConfig, robots: urllib.robotparser.RobotFileParser | None) -> float:
    """Seconds between page loads: ``config.delay``, or the site's Crawl-delay when that is longer.

    >>> rp = urllib.robotparser.RobotFileParser()
    >>> rp.parse(["User-agent: *", "Crawl-delay: 2"])
    >>> politeness_delay(RecordConfig(delay=0.5), rp), politeness_delay(RecordConfig(delay=3), rp)
    (2.0, 3)
    """
    asked = robots.crawl_delay(USER_AGENT) if robots is not None else None
    return max(config.delay, float(asked)) if asked else config.delay


async def record_site(
    urls: list[str], out_dir: str | Path, config: RecordConfig | None = None, log=print
) -> dict:
    """Crawl ``urls`` (one origin) into ``out_dir`` (``site.har`` + ``site.json``); returns the topology."""
    config = config or RecordConfig()
    if not urls:
        raise ValueError("give at least one start URL")
    origin = origin_of(urls[0])
    if any(origin_of(u) != origin for u in urls):
        raise ValueError(
            f"all start URLs must share one origin ({origin}); record other origins into other directories"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    har = out / "site.har"
    robots = _robots(origin) if config.respect_robots else None
    delay = politeness_delay(config, robots)
    pages: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    pw, browser = await launch_browser()
    try:
        context = await browser.new_context(
            record_har_path=str(har),
            record_har_content="embed",
            record_har_mode="minimal",
            user_agent=USER_AGENT,
        )
        page = await context.new_page()
        queue = deque((urldefrag(u)[0], 0) for u in urls)
        seen = {u for u, _ in queue}
        while queue and len(pages) < config.max_pages:
            url, depth = queue.popleft()
            if robots is not None and not robots.can_fetch(USER_AGENT, url):
                skipped[url] = "disallowed by robots.txt"
                continue
            if pages:
                await asyncio.sleep(delay)
            try:
                resp = await page.goto(url, wait_until="load", timeout=30_000)
            except Exception as e:
                skipped[url] = f"failed to load: {str(e).splitlines()[0]}"
                continue
            ctype = (resp.headers.get("content-type", "") if resp else "").split(";")[0]
            if resp is None or resp.status >= 400 or ctype not in ("text/html", "application/xhtml+xml"):
                skipped[url] = f"status {resp.status if resp else '?'} {ctype}"
                continue
            info = await page.evaluate(_EXTRACT_JS)
            links = [
                [text, urldefrag(href)[0]]
                for text, href in info["links"]
                if href.startswith(("http:", "https:"))
            ]
            pages[url] = {"title": info["title"], "links": links, "forms": info["forms"]}
            log(f"recorded {url} ({len(links)} links)")
            if depth < config.crawl_depth:
                for _, href in links:
                    if origin_of(href) == origin and href not in seen:
                        seen.add(href)
                        queue.append((href, depth + 1))
        await context.close()
    finally:
        await browser.close()
        await pw.stop()
    topo = {"origin": origin, "start_url": urldefrag(urls[0])[0], "pages": pages, "skipped": skipped}
    if config.origin_alias:
        topo = _rewrite_origin(har, topo, origin, config.origin_alias.rstrip("/"))
    (out / "site.json").write_text(json.dumps(topo, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return topo


def _rewrite_origin(har: Path, topo: dict, old: str, new: str) -> dict:
    """Move a recording to another origin: in the HAR's URLs and headers, and in the topology."""
    text = har.read_text(encoding="utf-8")
    text = text.replace(old, new).replace(urlsplit(old).netloc, urlsplit(new).netloc)
    har.write_text(text, encoding="utf-8")
    return json.loads(json.dumps(topo).replace(old, new))
