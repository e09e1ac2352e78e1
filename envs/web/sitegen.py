"""The two shipped sites, written for this project: their data, their HTML, and their task list.

``shop``: a small store (home with a search box, 6 category pages, 36 product pages with prices,
brands and ratings, a cart kept in ``localStorage``, a JavaScript ``confirm`` on "Empty cart",
a robots-disallowed staff page and an external link). ``wiki``: an encyclopedia of 48 invented
cities, people, rivers and societies with infoboxes and cross links, reached through portals.

Everything is drawn from a fixed seed, so the same version of this file always writes the same
bytes. ``build_sites.py`` serves the files, records them into HAR and writes the topology.

>>> files, tasks = shop_site()
>>> len([p for p in files if p.endswith(".html")]) >= 30, len(tasks) >= 60
(True, True)
"""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass, field

Files = dict[str, str]
"""site path (``/c/kitchen.html``) -> file content"""


def _page(title: str, body: str, nav: str = "", script: str = "") -> str:
    esc = html.escape(title)
    tail = f"<script>{script}</script>" if script else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc}</title></head>'
        f"<body><nav>{nav}</nav><main><h1>{esc}</h1>{body}</main>{tail}</body></html>\n"
    )


def _a(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _ul(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


# ----- shop ------------------------------------------------------------------------------------

CATEGORIES = ["Kitchen", "Garden", "Office", "Outdoor", "Toys", "Audio"]
_NOUNS = {
    "Kitchen": ["Kettle", "Skillet", "Grater", "Teapot", "Ladle", "Colander"],
    "Garden": ["Trowel", "Watering Can", "Pruner", "Planter", "Rake", "Hose Reel"],
    "Office": ["Stapler", "Desk Lamp", "Notebook", "Letter Tray", "Pen Set", "Monitor Stand"],
    "Outdoor": ["Tent", "Lantern", "Canteen", "Hammock", "Compass", "Sleeping Mat"],
    "Toys": ["Kite", "Puzzle", "Yo-Yo", "Spinning Top", "Marble Run", "Puppet"],
    "Audio": ["Headphones", "Speaker", "Radio", "Turntable", "Microphone", "Amplifier"],
}
_ADJ = [
    "Amber",
    "Brisk",
    "Cobalt",
    "Dune",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Ivory",
    "Juniper",
    "Kestrel",
    "Lumen",
]
_BRANDS = ["Northwind", "Oakhurst", "Pellway", "Quillon", "Rowan & Co", "Solvik"]
SHOP_ORIGIN = "http://shop.agentgym.test"
WIKI_ORIGIN = "http://wiki.agentgym.test"


@dataclass
class Product:
    sku: str
    name: str
    category: str
    price: float
    brand: str
    rating: float
    related: str = ""
    """sku of the "Often bought with" product"""


def shop_products() -> list[Product]:
    rng = random.Random(20261122)
    adjs = list(_ADJ)
    rng.shuffle(adjs)
    out: list[Product] = []
    for ci, cat in enumerate(CATEGORIES):
        for ni, noun in enumerate(_NOUNS[cat]):
            sku = f"{1001 + ci * 10 + ni}"
            price = round(rng.randint(4, 240) + rng.choice([0.0, 0.49, 0.5, 0.95, 0.99]), 2)
            out.append(
                Product(
                    sku,
                    f"{adjs[(ci * 5 + ni) % 12]} {noun}",
                    cat,
                    price,
                    rng.choice(_BRANDS),
                    rng.randint(25, 50) / 10,
                )
            )
    for p in out:
        p.related = rng.choice([q.sku for q in out if q.sku != p.sku])
    return out


_CART_JS = """
function cart(){try{return JSON.parse(localStorage.getItem('cart')||'{}')}catch(e){return {}}}
function addToCart(sku){const q=parseInt(document.getElementById('qty').value,10);const c=cart();
c[sku]=(c[sku]||0)+q;localStorage.setItem('cart',JSON.stringify(c));
document.getElementById('status').textContent='Added '+q+' to the cart. The cart holds '+c[sku]+' of this item.';}
"""
_CART_PAGE_JS = """
const names=%s;function cart(){try{return JSON.parse(localStorage.getItem('cart')||'{}')}catch(e){return {}}}
function show(){const c=cart();const rows=Object.keys(c).map(k=>'<tr><td>'+(names[k]||k)+'</td><td>'+c[k]+'</td></tr>');
document.getElementById('items').innerHTML=rows.length?'<table><tr><th>Item</th><th>Quantity</th></tr>'+rows.join('')+'</table>':'<p>Your cart is empty.</p>';}
function emptyCart(){if(confirm('Remove every item from the cart?')){localStorage.removeItem('cart');show();}}
show();
"""
_SEARCH_JS = """
const index=%s;
function search(){const q=document.getElementById('q').value.trim().toLowerCase();
const hits=index.filter(p=>q&&p[0].toLowerCase().includes(q));
document.getElementById('results').innerHTML=q?(hits.length?'<h2>Results</h2><ul>'+hits.map(p=>'<li><a href="'+p[1]+'">'+p[0]+'</a></li>').join('')+'</ul>':'<p>No products match.</p>'):'';return false;}
"""


def _price(p: float) -> str:
    return f"${p:,.2f}"


def shop_site() -> tuple[Files, list[dict]]:
    """The shop's files and its tasks."""
    products = shop_products()
    by_sku = {p.sku: p for p in products}
    nav = " | ".join([_a("/", "Home"), _a("/cart.html", "Cart"), _a("/help.html", "Help")])
    files: Files = {}
    index = json.dumps([[p.name, f"/p/{p.sku}.html"] for p in products])
    home = (
        "<p>Welcome to Harbor Lane Goods. Browse a department or search the catalogue.</p>"
        '<form id="search" onsubmit="return search()" role="search">'
        '<input id="q" name="q" aria-label="Search products"> <button type="submit">Search</button></form>'
        '<div id="results"></div><h2>Departments</h2>'
        + _ul([_a(f"/c/{c.lower()}.html", c) for c in CATEGORIES])
        + f"<footer>Payments by {_a('http://payments.example.org/', 'Example Payments')} | {_a('/private/staff.html', 'Staff area')}</footer>"
    )
    files["/index.html"] = _page("Harbor Lane Goods", home, nav, _SEARCH_JS % index)
    for c in CATEGORIES:
        items = [_a(f"/p/{p.sku}.html", p.name) for p in products if p.category == c]
        files[f"/c/{c.lower()}.html"] = _page(
            f"{c} department", f"<p>{len(items)} products.</p>" + _ul(items), nav
        )
    for p in products:
        rel = by_sku[p.related]
        body = (
            f"<p>{_a(f'/c/{p.category.lower()}.html', p.category + ' department')}</p>"
            f"<table><tr><th>Price</th><td>{_price(p.price)}</td></tr><tr><th>Brand</th><td>{html.escape(p.brand)}</td></tr>"
            f"<tr><th>SKU</th><td>{p.sku}</td></tr><tr><th>Rating</th><td>{p.rating} of 5</td></tr></table>"
            '<label for="qty">Quantity</label> <select id="qty">'
            + "".join(f"<option>{i}</option>" for i in range(1, 6))
            + f'</select> <button onclick="addToCart(\'{p.sku}\')">Add to cart</button><p id="status" role="status"></p>'
            f"<h2>Often bought with</h2><p>{_a(f'/p/{rel.sku}.html', rel.name)}</p>"
        )
        files[f"/p/{p.sku}.html"] = _page(p.name, body, nav, _CART_JS)
    names = json.dumps({p.sku: p.name for p in products})
    files["/cart.html"] = _page(
        "Your cart",
        '<div id="items"></div><button onclick="emptyCart()">Empty cart</button>',
        nav,
        _CART_PAGE_JS % names,
    )
    files["/help.html"] = _page("Help", "<p>Prices include tax. Orders ship within two days.</p>", nav)
    files["/private/staff.html"] = _page("Staff area", "<p>Staff only.</p>", nav)
    files["/robots.txt"] = "User-agent: *\nDisallow: /private/\n"
    return files, shop_tasks(products)


def _task(tid: str, kind: str, prompt: str, answer: str, *pages: str) -> dict:
    """A task whose plan visits ``pages`` in order and then answers."""
    return dict(id=tid, kind=kind, prompt=prompt, answer=answer, plan=[{"visit": u} for u in pages])


def shop_tasks(products: list[Product]) -> list[dict]:
    rng = random.Random(7)
    by_sku = {p.sku: p for p in products}
    url = {p.sku: f"/p/{p.sku}.html" for p in products}
    tasks: list[dict] = []
    for p in products:
        tasks.append(
            _task(
                f"price-{p.sku}",
                "fact",
                f"What is the price of the {p.name}?",
                f"{p.price}",
                url[p.sku],
            )
        )
        tasks.append(
            _task(
                f"brand-{p.sku}",
                "fact",
                f"Which brand makes the {p.name}?",
                p.brand,
                url[p.sku],
            )
        )
        rel = by_sku[p.related]
        tasks.append(
            _task(
                f"related-{p.sku}",
                "multihop",
                f"On the page of the {p.name}, follow the 'Often bought with' product. What is that product's rating (out of 5)?",
                f"{rel.rating}",
                url[p.sku],
                url[rel.sku],
            )
        )
        qty = 1 + int(p.sku) % 4
        tasks.append(
            dict(
                id=f"cart-{p.sku}",
                kind="form",
                prompt=f"Put {qty} of the {p.name} in the cart (one 'Add to cart' with quantity {qty}), then answer 'done'.",
                answer="done",
                cart={p.sku: qty},
                plan=[
                    {"visit": url[p.sku]},
                    {"select": ["combobox", "Quantity", str(qty)]},
                    {"click": ["button", "Add to cart"]},
                ],
            )
        )
    for i in range(30):
        a, b = rng.sample(products, 2)
        while a.price == b.price:
            a, b = rng.sample(products, 2)
        cheaper = a if a.price < b.price else b
        tasks.append(
            _task(
                f"cheaper-{i}",
                "comparison",
                f"Which is cheaper, the {a.name} or the {b.name}? Answer with the product name.",
                cheaper.name,
                url[a.sku],
                url[b.sku],
            )
        )
    return tasks


# ----- wiki ------------------------------------------------------------------------------------

_SYL = [
    "ka",
    "lo",
    "mer",
    "vin",
    "tha",
    "sol",
    "bri",
    "den",
    "ora",
    "quel",
    "ru",
    "sen",
    "tal",
    "wen",
    "ys",
    "zor",
    "fen",
    "gal",
]


@dataclass
class Article:
    slug: str
    title: str
    kind: str
    """city, person, river or society"""
    facts: dict[str, str | tuple[str, str]] = field(default_factory=dict)
    """infobox field -> text, or (linked slug, its title)"""


def _name(rng: random.Random, used: set[str], parts: int) -> str:
    while True:
        n = "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()
        if n not in used:
            used.add(n)
            return n


def wiki_articles() -> list[Article]:
    rng = random.Random(4242)
    used: set[str] = set()
    cities = [Article("", _name(rng, used, 3), "city") for _ in range(14)]
    people = [Article("", f"{_name(rng, used, 2)} {_name(rng, used, 3)}", "person") for _ in range(16)]
    rivers = [Article("", f"{_name(rng, used, 2)} River", "river") for _ in range(8)]
    socs = [Article("", f"{_name(rng, used, 2)} Society", "society") for _ in range(10)]
    every = cities + people + rivers + socs
    for a in every:
        a.slug = a.title.lower().replace(" ", "-")

    def link(x: Article) -> tuple[str, str]:
        return (x.slug, x.title)

    countries = ["Aldmark", "Belvera", "Corrinth", "Dastia"]
    for c in cities:
        c.facts = {
            "Country": rng.choice(countries),
            "Population": f"{rng.randint(12, 990) * 1000 + rng.randint(0, 999):,}",
            "Founded": str(rng.randint(900, 1850)),
            "River": link(rng.choice(rivers)),
        }
    for p in people:
        p.facts = {
            "Born": str(rng.randint(1700, 1990)),
            "Occupation": rng.choice(
                ["Cartographer", "Composer", "Engineer", "Botanist", "Poet", "Astronomer"]
            ),
            "Birthplace": link(rng.choice(cities)),
        }
    for r in rivers:
        r.facts = {
            "Length": f"{rng.randint(40, 2400)} km",
            "Mouth": rng.choice(["Grey Sea", "Lake Ormen", "Amber Bay"]),
            "Largest city": link(rng.choice(cities)),
        }
    for s in socs:
        s.facts = {
            "Founded": str(rng.randint(1600, 1980)),
            "Members": f"{rng.randint(30, 9000):,}",
            "Founder": link(rng.choice(people)),
            "Headquarters": link(rng.choice(cities)),
        }
    for c in cities:
        c.facts["Mayor"] = link(rng.choice(people))
    return every


PORTALS = {"city": "Places", "person": "People", "river": "Rivers", "society": "Societies"}


def wiki_site() -> tuple[Files, list[dict]]:
    """The wiki's files and its tasks."""
    arts = wiki_articles()
    nav = " | ".join([_a("/", "Main page"), _a("/all.html", "All articles"), _a("/about.html", "About")])
    files: Files = {}
    files["/index.html"] = _page(
        "Lorebook, the invented encyclopedia",
        "<p>Lorebook describes places, people, rivers and societies that never existed.</p><h2>Portals</h2>"
        + _ul([_a(f"/portal/{v.lower()}.html", v) for v in PORTALS.values()]),
        nav,
    )
    for kind, portal in PORTALS.items():
        items = [_a(f"/wiki/{a.slug}.html", a.title) for a in arts if a.kind == kind]
        files[f"/portal/{portal.lower()}.html"] = _page(f"Portal: {portal}", _ul(items), nav)
    files["/all.html"] = _page(
        "All articles",
        f"<p>{len(arts)} articles.</p>" + _ul([a.title for a in sorted(arts, key=lambda a: a.title)]),
        nav,
    )
    files["/about.html"] = _page(
        "About Lorebook",
        "<p>Every fact here is made up. " + _a("https://example.org/", "Example") + "</p>",
        nav,
    )
    by_slug = {a.slug: a for a in arts}
    for a in arts:
        rows = []
        for k, v in a.facts.items():
            cell = _a(f"/wiki/{v[0]}.html", v[1]) if isinstance(v, tuple) else html.escape(v)
            rows.append(f"<tr><th>{k}</th><td>{cell}</td></tr>")
        refs = [v for v in a.facts.values() if isinstance(v, tuple)]
        prose = f"<p>{html.escape(a.title)} is a {a.kind} described in Lorebook.</p>"
        if refs:
            prose += "<p>See also: " + ", ".join(_a(f"/wiki/{s}.html", t) for s, t in refs) + ".</p>"
        body = f'<table aria-label="Infobox">{"".join(rows)}</table>{prose}<p>{_a(f"/portal/{PORTALS[a.kind].lower()}.html", "Portal: " + PORTALS[a.kind])}</p>'
        files[f"/wiki/{a.slug}.html"] = _page(a.title, body, nav)
    files["/robots.txt"] = "User-agent: *\nAllow: /\n"
    return files, wiki_tasks(arts, by_slug)


def _fact_text(v: str | tuple[str, str]) -> str:
    return v[1] if isinstance(v, tuple) else v


_ASK = {"Population": "population", "Born": "year of birth", "Length": "length", "Founded": "founding year"}


def wiki_tasks(arts: list[Article], by_slug: dict[str, Article]) -> list[dict]:
    rng = random.Random(99)
    url = {a.slug: f"/wiki/{a.slug}.html" for a in arts}
    tasks: list[dict] = []
    for a in arts:
        for k, v in a.facts.items():
            if isinstance(v, tuple):
                continue
            tasks.append(
                _task(
                    f"fact-{a.slug}-{k.lower()}",
                    "fact",
                    f"According to Lorebook, what is the {k.lower()} of {a.title}?",
                    v,
                    url[a.slug],
                )
            )
        for k, v in a.facts.items():
            if not isinstance(v, tuple):
                continue
            b = by_slug[v[0]]
            for k2, v2 in b.facts.items():
                if isinstance(v2, tuple) or k2 not in ("Population", "Born", "Length", "Founded"):
                    continue
                tasks.append(
                    _task(
                        f"hop-{a.slug}-{k.lower()}-{k2.lower()}",
                        "multihop",
                        f"In Lorebook, the {k.lower()} of {a.title} has its own article. What is its {_ASK[k2]}?",
                        _fact_text(v2),
                        url[a.slug],
                        url[b.slug],
                    )
                )
    cities = [a for a in arts if a.kind == "city"]
    for i in range(30):
        x, y = rng.sample(cities, 2)
        px, py = (int(str(c.facts["Population"]).replace(",", "")) for c in (x, y))
        if px == py:
            continue
        tasks.append(
            _task(
                f"larger-{i}",
                "comparison",
                f"Which city has the larger population, {x.title} or {y.title}?",
                (x if px > py else y).title,
                url[x.slug],
                url[y.slug],
            )
        )
    return tasks


SITES = {"shop": (shop_site, SHOP_ORIGIN), "wiki": (wiki_site, WIKI_ORIGIN)}
"""site name -> (function returning its files and tasks, the origin it is replayed under)"""
