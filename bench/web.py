"""Benchmark of the web replay envs: teacher episodes/s (sequential and 4 in flight), time to the
first observation, observation size, side by side with raw Playwright doing the same page loads.

Run: ``.venv/bin/python bench/web.py [--episodes 20] [--env web/shop-v0]``; prints one JSON object.
Token counts are estimates (characters / 4; no tokenizer download is possible offline) next to the
exact character counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


async def raw_playwright(site, urls: list[str]) -> dict:
    """The raw engine: fresh context + HAR routing + first page + snapshot, then the same page loads."""
    from agentgym.envs.web.browser import launch_browser

    pw, browser = await launch_browser()
    firsts, loads = [], []
    try:
        for _ in range(5):
            t0 = time.perf_counter()
            ctx = await browser.new_context()
            await ctx.route_from_har(str(site.har), not_found="abort")
            page = await ctx.new_page()
            await page.goto(site.start_url, wait_until="load")
            await page.aria_snapshot(mode="ai")
            firsts.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            for url in urls:
                await page.goto(url, wait_until="load")
                await page.aria_snapshot(mode="ai")
            loads.append(len(urls) / (time.perf_counter() - t1))
            await ctx.close()
    finally:
        await browser.close()
        await pw.stop()
    return {
        "first_observation_s": round(statistics.median(firsts), 3),
        "page_loads_per_s": round(statistics.median(loads), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="web/shop-v0")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()

    import agentgym
    from agentgym.rollout import run_rollouts

    t0 = time.perf_counter()
    env = agentgym.make(args.env)
    env.reset(seed=0, options={"task_id": env.task_ids(1)[0]})
    cold = time.perf_counter() - t0
    warm = []
    for i in range(5):
        t1 = time.perf_counter()
        env.reset(seed=i, options={"task_id": env.task_ids(5)[i]})
        warm.append(time.perf_counter() - t1)
    site = env.site
    urls = [site.url(p) for p in list(site.pages)[:10]]
    env.close()

    out: dict = {"env": args.env, "episodes": args.episodes}
    out["first_observation_s"] = {
        "cold_with_browser_launch": round(cold, 3),
        "warm_median": round(statistics.median(warm), 3),
    }
    for conc in (1, 4):
        t1 = time.perf_counter()
        trajs = run_rollouts(args.env, "teacher", n=args.episodes, concurrency=conc, seed=0)
        dt = time.perf_counter() - t1
        out[f"teacher_concurrency_{conc}"] = {
            "episodes_per_s": round(len(trajs) / dt, 3),
            "turns_per_s": round(sum(t.num_turns for t in trajs) / dt, 2),
            "mean_score": sum(t.score for t in trajs) / len(trajs),
            "statuses": sorted({t.status for t in trajs}),
        }
    sizes = [
        len(m["content"])
        for t in trajs
        for m in t.messages
        if m["role"] in ("tool", "user") and "URL:" in (m.get("content") or "")
    ]
    out["observation_chars"] = {"mean": round(statistics.mean(sizes)), "max": max(sizes)}
    out["observation_tokens_est"] = {"mean": round(statistics.mean(sizes) / 4), "max": round(max(sizes) / 4)}
    out["raw_playwright"] = asyncio.run(raw_playwright(site, urls))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
