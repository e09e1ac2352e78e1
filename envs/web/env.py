"""``WebReplayEnv``: browse a cached site (HAR replay in Chromium) with tools, then answer.

The agent sees the page's URL, title and ARIA snapshot (``aria_snapshot(mode="ai")``, each
control with a ``[ref=eN]``) and acts with ``goto``, ``click``, ``type``, ``select``, ``back``
and ``answer``. Everything is served from the site's HAR (``route_from_har(not_found="abort")``):
no network, no server. A URL that was never recorded, an external URL, a stale ref, a
JavaScript dialog (accepted, and reported) or a link to a local file is an observation; a browser
that dies ends the episode with status ``env_error`` and the next episode starts a new browser.
The browser keeps one tab: links, forms and ``window.open`` aimed at a new tab open in it.

Playwright runs natively async (``areset``/``astep``/``aclose``, for the rollout runner); the
sync ``reset``/``step``/``close`` drive the same coroutines on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Literal

import gymnasium
from agentgym.envs.web.browser import kill_driver, launch_browser, parse_snapshot
from agentgym.envs.web.site import Site
from agentgym.envs.web.verify import pages_visited, task_success

from agentgym.env import EpisodeOver, ToolEnv
from agentgym.tools import ToolArgumentError, tool
from agentgym.types import Message, Task
from agentgym.verifiers import Rubric

_LOCAL_STORAGE_JS = (
    "() => Object.fromEntries(Object.keys(localStorage).map(k => [k, localStorage.getItem(k)]))"
)


_ONE_TAB_JS = """(() => {
  const here = el => { if (el && /^_blank$/i.test(el.target || "")) el.target = "_self"; };
  document.addEventListener("click", e => here(e.target.closest && e.target.closest("a, area")), true);
  document.addEventListener("submit", e => here(e.target), true);
  window.open = url => { if (url) location.assign(new URL(url, location.href).href); return null; };
})()"""
"""one tab: links and forms aimed at a new tab, and window.open, navigate the page itself"""

_NOT_PAGES = {"file", "data", "blob", "chrome", "about", "view-source", "filesystem", "ftp"}
"""link schemes a click does not follow (javascript: links run, as in any browser)"""

_OPTIONS_JS = "e => e.tagName === 'SELECT' ? Array.from(e.options).map(o => o.label) : null"


def _is_error_page(url: str) -> bool:
    return url.startswith("chrome-error:")


def _clip(text: str, limit: int) -> str:
    """``text``, or its start and a note when it is longer than ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class BrowserDied(RuntimeError):
    """The browser went away, or its page stopped responding (an endless script), mid-episode:
    an infrastructure failure, not the agent's."""


class WebReplayEnv(ToolEnv):
    policies = {
        "teacher": "agentgym.envs.web.teacher:web_teacher",
        "scripted": "agentgym.envs.web.teacher:web_teacher",
    }
    system_prompt = (
        "You browse a website through tools. Each observation shows the page URL, its title and an "
        "accessibility snapshot where every control has a ref like [ref=e5]. Use click(ref), type(ref, text), "
        "select(ref, option), goto(url) and back(); a long page is shown a part at a time: scroll(direction) "
        "moves the view and find(text) searches it. When you know the answer, call answer(text)."
    )
    verifier = Rubric([task_success, pages_visited], weights=[1.0, 0.0])
    ends_on_text = False
    max_turns = 30
    ray_resources = {"num_cpus": 1.0}
    """a Chromium per env keeps about one core busy (what a Ray actor reserves per env, `--ray`)"""

    def __init__(
        self,
        site: str | None = None,
        subtasks: int = 1,
        max_obs_chars: int = 6000,
        action_timeout_ms: int = 3000,
        max_turns: int | None = None,
        generated_tasks: bool = False,
        **kwargs: Any,
    ):
        """
        Args:
            site: a shipped site (``shop``, ``wiki``, ``pydocs``) or the path of a recorded site directory
            subtasks: subtasks per episode (1 = the site's single tasks; K > 1 = composites of K)
            max_obs_chars: the size of the window of the snapshot an observation shows (``scroll``
                and ``find`` move it over a longer page)
            action_timeout_ms: how long click/type/select wait for their element
            max_turns: assistant turns before truncation (default 30, or 15 per subtask)
            generated_tasks: the tasks made from the site's pages (fact, hop and compare
                questions, ``agentgym.envs.web.facts``), even where it ships a ``tasks.json``
        """
        if subtasks < 1:
            raise ValueError(f"subtasks must be at least 1, got {subtasks}")
        if max_obs_chars < 200:
            raise ValueError(f"max_obs_chars must be at least 200, got {max_obs_chars}")
        if site is None:
            raise ValueError(
                "web/replay-v0 needs a site: pass site=SITE_DIR (a directory from `agentgym web record`)"
            )
        super().__init__(max_turns=max_turns or max(30, 15 * subtasks), **kwargs)
        self.site = Site.load(site, generated=generated_tasks)
        self.subtasks = subtasks
        self.max_obs_chars = max_obs_chars
        self.action_timeout_ms = action_timeout_ms
        self._recorded = self._har_urls()
        self._pw = self._browser = self._context = self._page = None
        self._owner: asyncio.AbstractEventLoop | None = None
        self._private: asyncio.AbstractEventLoop | None = None
        self._events: list[str] = []
        self._refs: set[str] = set()
        self._links: dict[str, str] = {}
        self._last_request: str | None = None
        self.snapshot = ""
        """the full ARIA snapshot of the current page (the observation shows a window of it, at most
        max_obs_chars, which ``scroll`` and ``find`` move)"""
        self._lines: list[str] = []
        self._view = 0
        self._view_url = ""
        self._title = ""
        self.answer_text: str | None = None

    def _har_urls(self) -> set[str]:
        har = json.loads(self.site.har.read_text(encoding="utf-8"))
        return {e["request"]["url"].split("#")[0] for e in har["log"]["entries"]}

    # ----- tasks -------------------------------------------------------------------------------

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        if self.subtasks > 1:
            return [f"combo{self.subtasks}-{seed * 100_000 + i}" for i in range(n)]
        ids = [t["id"] for t in self.site.tasks]
        import random

        random.Random(seed).shuffle(ids)
        return [ids[i % len(ids)] for i in range(n)]

    def load_task(self, task_id: str | None) -> Task:
        if task_id is None:
            task_id = self.task_ids(1, seed=int(self.np_random.integers(10**6)))[0]
        task_id = str(task_id)
        if task_id.startswith("combo"):
            head, _, index = task_id.partition("-")
            try:
                subs = self.site.composite(int(head[5:]), int(index))
            except ValueError:
                raise ValueError(f"composite task ids look like 'combo3-17', got {task_id!r}") from None
            lines = [f"{i}. {t['prompt']}" for i, t in enumerate(subs, 1)]
            prompt = (
                f"Do these {len(subs)} tasks on the site, in any order:\n"
                + "\n".join(lines)
                + "\nThen call answer once "
                f"with the {len(subs)} answers in the order of the tasks, separated by ' | ' (write 'done' for a cart task)."
            )
        else:
            subs = [self.site.task(task_id)]
            prompt = subs[0]["prompt"] + "\nCall answer(text) with the answer when done."
        return Task(
            task_id,
            prompt,
            answer=[t["answer"] for t in subs],
            info={"subtasks": subs, "origin": self.site.origin},
        )

    # ----- the browser ------------------------------------------------------------------------

    async def _ensure_browser(self) -> None:
        loop = asyncio.get_running_loop()
        if self._browser is not None and (self._owner is not loop or not self._browser.is_connected()):
            await self._drop_browser()
        if self._browser is None:
            self._pw, self._browser = await launch_browser()
            self._owner = loop

    async def _drop_browser(self) -> None:
        """Forget the browser; close it when it belongs to this loop and still answers."""
        pw, browser, owner = self._pw, self._browser, self._owner
        self._pw = self._browser = self._context = self._page = None
        if browser is None:
            return
        if owner is asyncio.get_running_loop():
            for closer in (browser.close, pw.stop):
                try:
                    await asyncio.wait_for(closer(), 10)
                except Exception:
                    pass
        elif owner is not None and owner.is_running() and not owner.is_closed():
            asyncio.run_coroutine_threadsafe(self._stop(pw, browser), owner)
        else:  # its event loop is gone (an async caller that never called aclose)
            kill_driver(pw)

    @staticmethod
    async def _stop(pw, browser) -> None:
        for closer in (browser.close, pw.stop):
            try:
                await asyncio.wait_for(closer(), 10)
            except Exception:
                pass

    async def _close_context(self) -> None:
        context, self._context, self._page = self._context, None, None
        if context is not None:
            try:
                await asyncio.wait_for(context.close(), 10)
            except Exception:
                pass

    def _alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    def _on_dialog(self, dialog) -> None:
        if dialog.type == "beforeunload":
            self._events.append(
                "The page asked to confirm leaving it (a beforeunload dialog); it was accepted."
            )
        else:
            said = _clip(dialog.message, 300)
            self._events.append(f"A JavaScript {dialog.type} dialog said {said!r}; it was accepted.")
        asyncio.ensure_future(dialog.accept())

    def _on_page(self, page) -> None:
        # new tabs are made same-tab navigations by _ONE_TAB_JS; one that still opens is only reported
        if self._page is not None and page is not self._page:
            url = _clip(page.url, 500)
            self._events.append(
                f"The page opened a new tab ({url}), which is not shown: this browser keeps one tab; "
                "use goto to open its page here."
            )

    def _on_failed(self, request) -> None:
        try:
            main = request.frame == self._page.main_frame
        except Exception:
            main = False
        if main and request.is_navigation_request():
            self._last_request = request.url.split("#")[0]

    async def _observe(self) -> str:
        """Take a new snapshot of the page and show the window of it the agent is at: the top
        after a navigation, else where it was. A slow snapshot (a page with thousands of links on
        a busy machine) gets a second, longer try when the page still runs scripts; one whose script
        never yields counts as not responding."""
        page = self._page
        try:
            try:
                self.snapshot = await page.aria_snapshot(mode="ai", timeout=10_000)
            except Exception:
                if not self._alive():
                    raise
                # a page whose script never yields does not answer this; a merely large one does
                await asyncio.wait_for(page.evaluate("1"), 10)
                self.snapshot = await page.aria_snapshot(mode="ai", timeout=60_000)
            self._title = await asyncio.wait_for(page.title(), 30)
        except Exception as e:
            raise self._failure("reading the page", e) from None
        nodes = parse_snapshot(self.snapshot)
        self._refs = {n.ref for n in nodes}
        self._links = {n.ref: n.url for n in nodes if n.url}
        self._lines = self.snapshot.splitlines()
        if page.url != self._view_url:
            self._view, self._view_url = 0, page.url
        self._view = min(self._view, max(0, len(self._lines) - 1))
        events, self._events = self._events, []
        return "".join(e + "\n" for e in events) + self._window()

    def _window(self) -> str:
        """The page head and the lines of the snapshot from ``_view`` on, up to max_obs_chars."""
        lines, start = self._lines, self._view
        end, used = start, 0
        while end < len(lines) and (used + len(lines[end]) + 1 <= self.max_obs_chars or end == start):
            used += len(lines[end]) + 1
            end += 1
        shown = "\n".join(line[: self.max_obs_chars] for line in lines[start:end])
        head = f"URL: {_clip(self._page.url, 500)}\nTitle: {_clip(self._title, 300)}\n"
        if start == 0 and end >= len(lines):
            return head + shown
        more = []
        if end < len(lines):
            more.append("scroll('down') shows the next lines")
        if start > 0:
            more.append("scroll('up') the previous ones")
        more.append("find(text) searches the whole page")
        return f"{head}{shown}\n... (lines {start + 1}-{end} of {len(lines)}; {', '.join(more)})"

    def _failure(self, doing: str, e: BaseException) -> BrowserDied:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not self._alive():
            return BrowserDied(f"the browser died while {doing}: {why}")
        return BrowserDied(f"the page stopped responding while {doing}: {why}")

    @property
    def current_url(self) -> str:
        return self._page.url if self._page is not None else ""

    # ----- episodes ---------------------------------------------------------------------------

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        gymnasium.Env.reset(self, seed=seed)
        options = options or {}
        self.task = self.load_task(options.get("task_id"))
        self.turns, self.done, self.answer_text = 0, False, None
        self._view, self._view_url = 0, ""  # a scrolled view never carries into the next episode
        await self._close_context()
        for attempt in (0, 1):
            try:
                await self._ensure_browser()
                self._context = await self._browser.new_context(viewport={"width": 1024, "height": 768})
                await self._context.route_from_har(str(self.site.har), not_found="abort")
                await self._context.add_init_script(_ONE_TAB_JS)
                self._page = await self._context.new_page()
                self._context.on("page", self._on_page)
                self._page.set_default_timeout(self.action_timeout_ms)
                self._page.on("dialog", self._on_dialog)
                self._page.on("requestfailed", self._on_failed)
                self._events = []
                await self._page.goto(self.site.start_url, wait_until="load", timeout=30_000)
                first = await self._observe()
                break
            except Exception:
                if attempt == 1 or self._alive():
                    raise
                await self._drop_browser()  # a dead browser from the last episode: start a new one
        messages: list[Message] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": f"{self.task.prompt}\n\n{first}"},
        ]
        self.trajectory = self.new_trajectory(messages, seed=seed, site=self.site.name)
        return [dict(m) for m in messages], {"task_id": self.task.task_id, "tools": self.tool_schemas}

    async def astep(self, action: Message):
        if self.done:
            raise EpisodeOver("the episode is over; call reset() before step()")
        if not isinstance(action, dict):
            action = {"role": "assistant", "content": action if isinstance(action, str) else repr(action)}
        self.trajectory.messages.append(action)
        self.turns += 1
        info: dict[str, Any] = {"turn": self.turns}
        try:
            replies = await self.arespond(action)
            self.trajectory.messages.extend(replies)
            terminated = self.done
            truncated = not terminated and self.turns >= self.max_turns
            if terminated or truncated:
                self.trajectory.metadata["final_state"] = await self._final_state()
        except BrowserDied as e:
            return self._env_error(str(e), info)
        reward = 0.0
        if terminated or truncated:
            self.done = True
            self.finish(truncated, info)
            reward = self.trajectory.score
            await self._close_context()
        return [dict(m) for m in replies], reward, terminated, truncated, info

    def _env_error(self, why: str, info: dict[str, Any]):
        self.done = True
        traj = self.trajectory
        traj.status, traj.score = "env_error", 0.0
        traj.metadata["env_error"] = why
        info.update(status="env_error", error=why)
        self._context = self._page = None
        return [], 0.0, True, False, info

    async def _final_state(self) -> dict[str, Any]:
        try:
            storage = await asyncio.wait_for(self._page.evaluate(_LOCAL_STORAGE_JS), 10)
            return {"url": self._page.url, "local_storage": storage}
        except Exception as e:
            if not self._alive() or isinstance(e, asyncio.TimeoutError):
                raise self._failure("reading the final page state", e) from None
            return {"url": self._page.url, "local_storage": {}, "error": str(e).splitlines()[0]}

    async def acall_tool(self, call: Any, arguments: Any = None) -> Message:
        """One tool call, run in the browser (``arespond`` of the base class plans the calls)."""
        out, tool_, raw = self._resolve_call(call, arguments)
        if tool_ is None:  # the reply already says what is wrong with the call
            return out
        name = tool_.name
        try:
            args = tool_.validate(raw)
        except ToolArgumentError as e:
            out["content"] = f"Error: {name}: {e}"
            return out
        if name == "answer":
            out["content"] = tool_.call(args, owner=self)
            return out
        self._last_request = None
        try:
            out["content"] = await tool_.acall(args, owner=self)
        except BrowserDied:
            raise
        except Exception as e:
            if not self._alive():
                raise BrowserDied(f"the browser died during {name}: {str(e).splitlines()[0]}") from None
            out["content"] = f"Error: {name} failed: {str(e).splitlines()[0]}\n{await self._observe()}"
        return out

    # ----- tools: the browser actions, then the answer -----------------------------------------

    def _external(self, url: str) -> str | None:
        from agentgym.envs.web.record import origin_of

        if not url.startswith(("http://", "https://")):
            return f"Cannot open {_clip(url, 200)!r}: only http(s) pages of {self.site.origin} are available."
        if origin_of(url) != self.site.origin:
            return f"{_clip(url, 500)} is an external URL; only {self.site.origin} is cached for offline use. The page is unchanged."
        return None

    async def _settle(self, action: str) -> str:
        """After an action: wait for any navigation, and undo one that landed on an error page."""
        page = self._page
        if self._last_request is not None:
            # a navigation failed (not cached, or external): its error page commits a moment later
            try:
                await page.wait_for_url(_is_error_page, wait_until="commit", timeout=2_000)
            except Exception:
                pass
        try:
            await page.wait_for_load_state("load", timeout=10_000)
        except Exception:
            pass
        failed = self._last_request
        if failed is None and not _is_error_page(page.url):
            return f"{action}.\n{await self._observe()}"
        failed = _clip(failed or "the link's target", 500)
        msg = (
            self._external(failed)
            or f"{failed} is not in the cache (it was never recorded), so it cannot be shown offline."
        )
        msg = msg.replace(" The page is unchanged.", "")
        if _is_error_page(page.url):
            await page.go_back(wait_until="load")
            return f"{action}, but {msg} Went back.\n{await self._observe()}"
        return f"{action}, but {msg} The page is unchanged.\n{await self._observe()}"

    @tool
    async def goto(self, url: str) -> str:
        """Open a URL of the site.

        Args:
            url: an absolute URL, or a path such as /c/kitchen.html
        """
        from urllib.parse import urldefrag, urljoin

        here = self._page.url
        base = here if here.startswith(("http://", "https://")) else self.site.start_url
        target = urldefrag(urljoin(base, url.strip()))[0]
        problem = self._external(target)
        if problem:
            return f"{problem}\n{await self._observe()}"
        if target not in self._recorded:
            return f"{_clip(target, 500)} is not in the cache (it was never recorded), so it cannot be shown offline. The page is unchanged.\n{await self._observe()}"
        await self._page.goto(target, wait_until="load", timeout=30_000)
        return f"Opened {_clip(target, 500)}.\n{await self._observe()}"

    def _locate(self, ref: str):
        key = ref.strip().strip("[]").removeprefix("ref=")
        if key not in self._refs:
            return None, ref
        return self._page.get_by_ref(key), key

    def _stale(self, ref: str) -> str:
        return (
            f"There is no element with ref {_clip(ref, 100)!r} on the current page (refs look like e12 "
            "and change with every snapshot); use a ref from the latest snapshot."
        )

    @tool
    async def click(self, ref: str) -> str:
        """Click the element with this ref from the latest snapshot.

        Args:
            ref: the element's ref, e.g. e12
        """
        loc, ref = self._locate(ref)
        if loc is None:
            return f"{self._stale(ref)}\n{await self._observe()}"
        href = self._links.get(ref, "")
        if href.partition(":")[0].lower() in _NOT_PAGES:  # never let the browser try a local file
            return f"The link {ref} points to {_clip(href, 200)!r}, which is not a page of the site; nothing was opened.\n{await self._observe()}"
        await loc.click()
        return await self._settle(f"Clicked {ref}")

    @tool
    async def type(self, ref: str, text: str, submit: bool = False) -> str:
        """Replace the text of an input field.

        Args:
            ref: the field's ref from the latest snapshot
            text: what to type
            submit: press Enter afterwards
        """
        loc, ref = self._locate(ref)
        if loc is None:
            return f"{self._stale(ref)}\n{await self._observe()}"
        await loc.fill(text)
        if submit:
            await loc.press("Enter")
            return await self._settle(f"Typed {_clip(text, 200)!r} into {ref} and pressed Enter")
        return f"Typed {_clip(text, 200)!r} into {ref}.\n{await self._observe()}"

    @tool
    async def select(self, ref: str, option: str) -> str:
        """Choose an option of a drop-down list.

        Args:
            ref: the list's ref from the latest snapshot
            option: the option's visible text
        """
        loc, ref = self._locate(ref)
        if loc is None:
            return f"{self._stale(ref)}\n{await self._observe()}"
        options = await loc.evaluate(_OPTIONS_JS)
        if options is None:
            return f"[ref={ref}] is not a drop-down list (a <select>); click it instead.\n{await self._observe()}"
        wanted = " ".join(option.split()).casefold()
        label = next((o for o in options if o == option), None) or next(
            (o for o in options if " ".join(o.split()).casefold() == wanted), None
        )
        if label is None:
            listed = ", ".join(repr(o) for o in options[:30]) + (", ..." if len(options) > 30 else "")
            return (
                f"The list [ref={ref}] has no option {_clip(option, 100)!r}; its options are: {listed}.\n"
                f"{await self._observe()}"
            )
        chosen = await loc.select_option(label=label)
        return await self._settle(f"Selected {label!r} in {ref} (value {chosen[0] if chosen else '?'})")

    @tool
    async def back(self) -> str:
        """Go back to the previous page."""
        page = self._page
        before = page.url
        resp = await page.go_back(wait_until="load")
        if not page.url.startswith(("http://", "https://")):
            # the blank page every episode starts from is not a page of the site: stay where we were
            await page.go_forward(wait_until="load")
            return f"There is no previous page.\n{await self._observe()}"
        if resp is None and page.url == before:
            return f"There is no previous page.\n{await self._observe()}"
        return f"Went back.\n{await self._observe()}"

    @tool
    async def scroll(self, direction: Literal["down", "up", "top"] = "down") -> str:
        """Show the next (or previous) part of a long page's snapshot; the page itself is unchanged.

        Args:
            direction: down, up, or top
        """
        if direction == "top":
            self._view = 0
        else:
            step = max(1, self._window().count("\n") - 3)
            self._view = max(
                0, min(len(self._lines) - 1, self._view + (step if direction == "down" else -step))
            )
        return self._window()

    @tool
    async def find(self, text: str) -> str:
        """Find text in the current page's snapshot: lists the matching lines (with their refs) and
        moves the view to the first one.

        Args:
            text: the words to look for (case does not matter)
        """
        needle = " ".join(text.lower().split())
        if not needle:
            return "find needs some text to look for."
        hits = [i for i, line in enumerate(self._lines) if needle in " ".join(line.lower().split())]
        if not hits:
            return f"{_clip(text, 100)!r} is not on this page ({len(self._lines)} lines searched).\n{self._window()}"
        listed = "\n".join(f"line {i + 1}: {_clip(self._lines[i].strip(), 200)}" for i in hits[:20])
        extra = f"\n(and {len(hits) - 20} more)" if len(hits) > 20 else ""
        self._view = max(0, hits[0] - 2)
        return f"{len(hits)} lines match {_clip(text, 100)!r}:\n{listed}{extra}\n\n{self._window()}"

    @tool
    def answer(self, text: str) -> str:
        """Give the final answer; this ends the episode.

        Args:
            text: the answer (for several tasks, the answers separated by ' | ')
        """
        self.answer_text = text
        self.done = True
        return "Answer recorded."

    # ----- sync API (a private event loop in a thread) -----------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._private is None or self._private.is_closed():
            loop = asyncio.new_event_loop()

            def run() -> None:
                loop.run_forever()
                loop.close()

            threading.Thread(target=run, name="web-env-loop", daemon=True).start()
            self._private = loop
        return self._private

    def _sync(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop()).result()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        return self._sync(self.areset(seed=seed, options=options))

    def step(self, action: Message):
        return self._sync(self.astep(action))

    async def _shutdown(self) -> None:
        await self._close_context()
        await self._drop_browser()

    async def aclose(self) -> None:
        self.done = True
        if self._owner is asyncio.get_running_loop():
            await self._shutdown()
        else:
            self.close()

    def close(self) -> None:
        self.done = True
        owner = self._owner
        if self._browser is not None and owner is not None and owner.is_running():
            try:
                on_owner = asyncio.get_running_loop() is owner
            except RuntimeError:
                on_owner = False
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), owner)
            if not on_owner:
                future.result(timeout=30)
        elif self._browser is not None:  # its event loop is gone (an async caller that never called aclose)
            kill_driver(self._pw)
        self._pw = self._browser = self._context = self._page = None
        if self._private is not None and not self._private.is_closed():
            loop, self._private = self._private, None
            loop.call_soon_threadsafe(loop.stop)
