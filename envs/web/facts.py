"""Information-seeking tasks made from a recorded site's own pages: the answer is on a page, never
in the question.

Facts come from the HTML each page was recorded with (read from ``site.har``):

- a table with a header row: the first cell of a row names a subject, each other cell is the
  value of its column for that subject (``Python type`` of ``h`` is ``integer``);
- a two-column table, or a definition list, on a page: each row or term names an attribute of
  the page's subject (its heading) (``Population`` of ``Wenthaka`` is ``931,398``).

Three kinds of task, each with a plan the teacher follows and accepted answers the verifier
compares after ``normalize_answer``:

- ``fact``: one fact on a page 1-3 links from the start page;
- ``hop``: a fact whose value names another page's subject, followed there ("the population of
  the country of Wenthaka");
- ``compare``: two subjects with numeric values of the same attribute, answered with the larger
  value ("compare the population of A with that of B"), on two pages or two rows.

A fact is used only when its subject and attribute name it uniquely on the site and its value
is short; a task is refused when its answer appears in its prompt.
"""

from __future__ import annotations

import base64
import json
import random
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from agentgym.envs.web.site import Site, normalize_answer

MAX_VALUE_WORDS = 6
MAX_DEPTH = 3


@dataclass(frozen=True)
class Fact:
    url: str
    subject: str
    attribute: str
    value: str
    about_page: bool = False
    """the subject is the page's own (its heading): a value naming it leads to this page"""


_FOOTNOTE = re.compile(r"\s*(\[\d+\]|\(\d+\))+$")


def _clean(text: str) -> str:
    """Spacing folded; a trailing colon, pilcrow or footnote mark ("[1]", "(2)") dropped."""
    return _FOOTNOTE.sub("", " ".join(text.split()).strip(" :\u00b6")).strip(" :\u00b6")


class _Tables(HTMLParser):
    """Collects the page heading, tables (rows of (cell text, is header)) and definition lists."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.h1 = ""
        self.tables: list[list[list[tuple[str, bool]]]] = []
        self.dls: list[list[tuple[str, str]]] = []
        self._stack: list[list] = []  # open tables: list of rows
        self._cell: list[str] | None = None
        self._header = False
        self._in_h1 = False
        self._dl: list[list] = []  # open dls: [pairs, current dt, current dd parts, in]
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "h1" and not self.h1:
            self._in_h1 = True
        elif tag == "table":
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._stack[-1].append([])
        elif tag in ("td", "th") and self._stack and self._stack[-1]:
            self._cell, self._header = [], tag == "th"
        elif tag == "dl":
            self._dl.append([[], None, None, None])
        elif tag in ("dt", "dd") and self._dl:
            self._dl[-1][3] = tag
            if tag == "dt":
                self._dl[-1][1] = []
            else:
                self._dl[-1][2] = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "h1":
            self._in_h1 = False
        elif tag in ("td", "th") and self._cell is not None and self._stack and self._stack[-1]:
            self._stack[-1][-1].append((_clean("".join(self._cell)), self._header))
            self._cell = None
        elif tag == "table" and self._stack:
            self.tables.append([r for r in self._stack.pop() if r])
        elif tag == "dd" and self._dl and self._dl[-1][1] is not None and self._dl[-1][2] is not None:
            dl = self._dl[-1]
            dl[0].append((_clean("".join(dl[1])), _clean("".join(dl[2]))))
            dl[1] = dl[2] = dl[3] = None
        elif tag == "dt" and self._dl:
            self._dl[-1][3] = None
        elif tag == "dl" and self._dl:
            self.dls.append(self._dl.pop()[0])

    def handle_data(self, data):
        if self._skip:
            return
        if self._in_h1:
            self.h1 += data
        if self._cell is not None:
            self._cell.append(data)
        if self._dl and self._dl[-1][3] == "dt" and self._dl[-1][1] is not None:
            self._dl[-1][1].append(data)
        elif self._dl and self._dl[-1][3] == "dd" and self._dl[-1][2] is not None:
            self._dl[-1][2].append(data)


def _term(text: str) -> bool:
    """A definition-list term that names an attribute (not a function signature or a sentence)."""
    return 0 < len(text) <= 40 and len(text.split()) <= 4 and not re.search(r"[()=.]", text)


def _short(value: str) -> bool:
    """A value short enough to be answered exactly: a few words, not a list or a sentence."""
    if not 0 < len(value) <= 60 or len(value.split()) > MAX_VALUE_WORDS:
        return False
    if value.endswith(".") and len(value.split()) >= 3:
        return False
    return "," not in value or re.fullmatch(r"[$€£]?\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*\w*", value) is not None


def page_facts(url: str, html: str, title: str = "") -> list[Fact]:
    """The facts one page states (see the module docstring)."""
    p = _Tables()
    try:
        p.feed(html)
        p.close()
    except Exception:  # noqa: BLE001 - a page the parser cannot read states no facts
        return []
    subject = _clean(p.h1) or _clean(title)
    facts: list[Fact] = []
    for table in p.tables:
        headed = len(table) >= 2 and len(table[0]) >= 2 and all(h for _, h in table[0])
        if {len(r) for r in table} == {2} and subject and not headed:  # attribute | value rows
            facts += [Fact(url, subject, a, v, True) for (a, _), (v, _) in table if a and _short(v)]
        elif headed:
            header = [c for c, _ in table[0]]
            for row in table[1:]:
                if len(row) != len(header) or not row[0][0]:
                    continue
                facts += [
                    Fact(url, row[0][0], header[i], row[i][0])
                    for i in range(1, len(row))
                    if header[i] and _short(row[i][0])
                ]
    for dl in p.dls:
        facts += [
            Fact(url, subject, t, d, True)
            for t, d in dl
            if subject and _term(t) and _short(d) and len(d.split()) <= 4
        ]
    return facts


def recorded_pages(site: Site) -> dict[str, str]:
    """URL -> the HTML each page of the site's topology was recorded with."""
    har = json.loads(site.har.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for e in har["log"]["entries"]:
        url = e["request"]["url"].split("#")[0]
        content = e["response"].get("content") or {}
        if url not in site.pages or url in out or "html" not in content.get("mimeType", ""):
            continue
        text = content.get("text") or ""
        if content.get("encoding") == "base64":
            text = base64.b64decode(text).decode("utf-8", "replace")
        out[url] = text
    return out


def site_name(site: Site) -> str:
    """What the questions call the site: the title part most of its pages share ("Python 3.11.2
    documentation" of "struct — Python 3.11.2 documentation"), else its start page's title."""
    parts = [re.split(r"\s+[—|–-]\s+", p.get("title", ""))[-1].strip() for p in site.pages.values()]
    common = max(set(parts), key=parts.count) if parts else ""
    if common and parts.count(common) * 2 >= len(parts) and len(parts) > 1:
        return common
    return _clean(site.pages.get(site.start_url, {}).get("title", "")) or site.name


def _number(value: str) -> float | None:
    n = normalize_answer(value)
    try:
        return float(n)
    except ValueError:
        return None


def _leaks(answer: str, prompt: str) -> bool:
    a, p = normalize_answer(answer), normalize_answer(prompt)
    return not a or re.search(rf"(?<!\w){re.escape(a)}(?!\w)", p) is not None


def generate_tasks(site: Site, seed: int = 0, per_kind: int = 200) -> list[dict]:
    """Fact, hop and compare tasks from the site's recorded pages (see the module docstring)."""
    depth = {}
    for url in site.pages:
        path = site.shortest_path(site.start_url, url)
        if path is not None:
            depth[url] = len(path)
    html = recorded_pages(site)
    facts: list[Fact] = []
    for url, text in html.items():
        if 1 <= depth.get(url, -1) <= MAX_DEPTH:
            facts += page_facts(url, text, site.pages[url].get("title", ""))
    # a (subject, attribute) stated twice with different values names nothing; with one, keep one
    by_key: dict[tuple[str, str], list[Fact]] = {}
    for f in facts:
        by_key.setdefault((normalize_answer(f.subject), normalize_answer(f.attribute)), []).append(f)
    unique = [fs[0] for fs in by_key.values() if len({normalize_answer(f.value) for f in fs}) == 1]
    name = site_name(site)
    tasks: list[dict] = []

    def add(kind, key, prompt, answers, visits):
        if any(_leaks(a, prompt) for a in answers):
            return
        tasks.append(
            dict(
                id=f"{kind}-{len(tasks)}-{re.sub(r'[^a-z0-9]+', '-', key.lower()).strip('-')[:40]}",
                kind=kind,
                prompt=prompt,
                answer=answers[0],
                answers=answers,
                plan=[{"visit": u} for u in dict.fromkeys(visits)],
            )
        )

    rng = random.Random(f"{name}-{seed}")
    for f in rng.sample(unique, min(per_kind, len(unique))):
        add(
            "fact",
            f"{f.subject} {f.attribute}",
            f"On {name}, what is the {f.attribute} of {f.subject}?",
            [f.value],
            [f.url],
        )
    # hops: a value that is another subject's name leads to that subject's facts
    by_subject: dict[str, list[Fact]] = {}
    for f in unique:
        by_subject.setdefault(normalize_answer(f.subject), []).append(f)
    hops = [
        (a, b)
        for a in unique
        if _number(a.value) is None
        for b in by_subject.get(normalize_answer(a.value), [])
        if b.about_page and b.url != a.url and normalize_answer(b.subject) != normalize_answer(a.subject)
    ]
    for a, b in rng.sample(hops, min(per_kind, len(hops))):
        prompt = f"On {name}, what is the {b.attribute} of the {a.attribute} of {a.subject}?"
        add("hop", f"{a.subject} {a.attribute} {b.attribute}", prompt, [b.value], [a.url, b.url])
    # comparisons: two subjects with different numbers for the same attribute
    numeric: dict[str, list[Fact]] = {}
    for f in unique:
        if _number(f.value) is not None:
            numeric.setdefault(normalize_answer(f.attribute), []).append(f)
    pairs = [
        (x, y)
        for group in numeric.values()
        for i, x in enumerate(group)
        for y in group[i + 1 :]
        if _number(x.value) != _number(y.value) and normalize_answer(x.subject) != normalize_answer(y.subject)
    ]
    for x, y in rng.sample(pairs, min(per_kind, len(pairs))):
        first, second = (x, y) if rng.random() < 0.5 else (y, x)
        big = max((x, y), key=lambda f: _number(f.value))
        prompt = (
            f"On {name}, compare the {x.attribute} of {first.subject} with that of {second.subject}. "
            "Answer with the larger of the two values."
        )
        add("compare", f"{x.subject} {y.subject} {x.attribute}", prompt, [big.value], [first.url, second.url])
    return tasks
