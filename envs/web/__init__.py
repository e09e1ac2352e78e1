"""Cached live-web replay environments: Playwright over HAR recordings of whole sites.

``web/shop-v0`` and ``web/wiki-v0`` are original sites shipped with agentgym (built by
``build_sites.py``); ``web/pydocs-v0`` is 33 pages of the Python 3.11 documentation, recorded
(``sites/pydocs/SOURCE.md``); ``web/replay-v0`` takes ``site=SITE_DIR`` for any site recorded with
``agentgym web record``. The env lives in ``env.py`` (imports Playwright only when it runs), the
teacher in ``teacher.py``, the command line in ``cli.py``.
"""
