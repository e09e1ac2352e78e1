"""``agentgym web record``, ``agentgym web serve`` and ``agentgym generate teacher``.

agentgym web record http://127.0.0.1:8000/ --crawl-depth 2 --out sites/mysite
agentgym web serve sites/mysite --port 8080
agentgym generate teacher --env web/wiki-v0 --n 100 --subtasks 3 --out teacher.jsonl
agentgym eval --env web/replay-v0 --env-kwargs site=sites/mysite --policy teacher --n 20
"""

from __future__ import annotations

import argparse
import json
import sys


def add_commands(subparsers) -> None:
    web = subparsers.add_parser("web", help="record a live site into a cached site, or browse a recording")
    sub = web.add_subparsers(dest="web_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "record", help="crawl a site (same origin, robots.txt respected) into SITE_DIR: HAR + topology"
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="start URLs, all of one origin")
    p.add_argument(
        "--out", required=True, metavar="SITE_DIR", help="directory to write site.har and site.json into"
    )
    p.add_argument(
        "--crawl-depth", type=int, default=2, help="links to follow from the start URLs (default 2)"
    )
    p.add_argument("--delay", type=float, default=0.5, help="seconds between page loads (default 0.5)")
    p.add_argument("--max-pages", type=int, default=500, help="stop after this many pages (default 500)")
    p.add_argument(
        "--ignore-robots", action="store_true", help="crawl what robots.txt disallows (your own sites only)"
    )
    p.add_argument(
        "--origin-alias",
        default=None,
        metavar="ORIGIN",
        help="replay under this origin instead of the recorded one (e.g. http://docs.example.test)",
    )
    p.set_defaults(func=_record)
    p = sub.add_parser("serve", help="serve a recorded site from its HAR on 127.0.0.1 for a person to browse")
    p.add_argument(
        "site",
        metavar="SITE_DIR",
        help="a recorded site directory, or a shipped site name (shop, wiki, pydocs)",
    )
    p.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 picks a free one)"
    )
    p.set_defaults(func=_serve)
    p = sub.add_parser(
        "tasks",
        help="make information-seeking tasks from a recorded site's pages (facts, hops, comparisons)",
        description="Make fact, hop and compare tasks from the tables and definition lists of a recorded "
        "site's pages; print how many of each, and write them where --out says (SITE_DIR/tasks.json "
        "makes web/replay-v0 use them).",
    )
    p.add_argument("site", metavar="SITE_DIR", help="a recorded site directory, or a shipped site name")
    p.add_argument("--out", default=None, help="write the tasks to this JSON file")
    p.add_argument("--seed", type=int, default=0, help="which facts are drawn when there are many")
    p.set_defaults(func=_tasks)


def _tasks(args: argparse.Namespace) -> int:
    from collections import Counter

    from agentgym.envs.web.facts import generate_tasks
    from agentgym.envs.web.site import Site

    tasks = generate_tasks(Site.load(args.site), seed=args.seed)
    kinds = Counter(t["kind"] for t in tasks)
    print(json.dumps({"tasks": len(tasks), **kinds}))
    if not tasks:
        print("no facts found: the pages hold no header tables, two-column tables or definition lists")
        return 1
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(tasks, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return 0


def add_generators(subparsers) -> None:
    p = subparsers.add_parser(
        "teacher", help="shortest-path teacher trajectories of a web env, verified in the browser"
    )
    p.add_argument("--env", required=True, help="a web env id, e.g. web/shop-v0")
    p.add_argument("--n", type=int, required=True, help="trajectories to write")
    p.add_argument("--subtasks", type=int, default=1, help="subtasks per episode (K > 1 = composite tasks)")
    p.add_argument("--seed", type=int, default=0, help="which tasks (and composites) are drawn")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.set_defaults(func=_teacher)


def _record(args: argparse.Namespace) -> int:
    import asyncio

    from agentgym.envs.web.record import RecordConfig, record_site

    config = RecordConfig(
        crawl_depth=args.crawl_depth,
        delay=args.delay,
        max_pages=args.max_pages,
        respect_robots=not args.ignore_robots,
        origin_alias=args.origin_alias,
    )
    topo = asyncio.run(record_site(args.urls, args.out, config, log=lambda s: print(s, file=sys.stderr)))
    print(f"recorded {len(topo['pages'])} pages into {args.out} (skipped {len(topo['skipped'])})")
    for url, why in sorted(topo["skipped"].items()):
        print(f"  skipped {url}: {why}")
    return 0 if topo["pages"] else 1


def _serve(args: argparse.Namespace) -> int:
    from agentgym.envs.web.serve import make_server

    server = make_server(args.site, args.port)
    print(
        f"serving {args.site} from its HAR at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _teacher(args: argparse.Namespace) -> int:
    if not args.env.startswith("web/"):
        raise ValueError(
            f"the teacher generator serves web envs (web/shop-v0, web/wiki-v0), got {args.env!r}"
        )
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    from agentgym.envs.web.teacher import generate_teacher

    kept, failed = generate_teacher(args.env, args.n, args.out, subtasks=args.subtasks, seed=args.seed)
    print(f"wrote {kept} verified trajectories to {args.out} ({failed} failed verification)")
    return 0 if failed == 0 else 1
