"""What an observation costs by page size, on a recorded site: the env's ``goto`` (load, snapshot,
window) and ``find`` (no browser call) beside raw Playwright loading the page and taking its
snapshot, for the pages with the most links.

Run: ``.venv/bin/python bench/web_pages.py [--site pydocs] [--pages 6] [--repeats 5]``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


async def raw(site, urls: list[str], repeats: int) -> dict[str, float]:
    from agentgym.envs.web.browser import launch_browser

    pw, browser = await launch_browser()
    out = {}
    try:
        ctx = await browser.new_context()
        await ctx.route_from_har(str(site.har), not_found="abort")
        page = await ctx.new_page()
        for url in urls:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await page.goto(url, wait_until="load")
                await page.aria_snapshot(mode="ai")
                times.append(time.perf_counter() - t0)
            out[url] = statistics.median(times)
    finally:
        await browser.close()
        await pw.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="pydocs")
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import agentgym
    from agentgym.types import tool_call

    env = agentgym.make("web/replay-v0", site=args.site)
    site = env.site
    urls = sorted(site.pages, key=lambda u: -len(site.pages[u]["links"]))[: args.pages]
    env.reset(seed=0, options={"task_id": env.task_ids(1)[0]})

    def call(name, **kw):
        t0 = time.perf_counter()
        env.step({"role": "assistant", "content": "", "tool_calls": [tool_call(name, kw)]})
        return time.perf_counter() - t0

    rows = []
    for url in urls:
        gotos, finds = [], []
        for _ in range(args.repeats):
            if env.done:
                env.reset(seed=0, options={"task_id": env.task_ids(1)[0]})
            gotos.append(call("goto", url=url))
            finds.append(call("find", text="return"))
        rows.append(
            {
                "url": url,
                "links": len(site.pages[url]["links"]),
                "snapshot_chars": len(env.snapshot),
                "goto_median_s": round(statistics.median(gotos), 3),
                "goto_max_s": round(max(gotos), 3),
                "find_median_s": round(statistics.median(finds), 4),
            }
        )
    env.close()
    raw_times = asyncio.run(raw(site, urls, args.repeats))
    for row in rows:
        row["raw_playwright_median_s"] = round(raw_times[row["url"]], 3)
    print(json.dumps({"site": args.site, "repeats": args.repeats, "pages": rows}, indent=1))


if __name__ == "__main__":
    main()
