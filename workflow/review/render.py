"""Fill the review page template (``template.html``) with the page's data.

Every value reaches the page inside ``<script type="application/json">`` blocks (the data, and what the page
parses only on demand) whose ``<``, ``>`` and ``&`` are written as JSON ``\\u`` escapes (so no id can close a block
or start markup); the page's script reads them with ``JSON.parse`` and builds the cards with ``textContent`` and
DOM properties, never from HTML strings. The title is HTML-escaped. The result is one self-contained file (no
server, no network): it opens from disk and inside ``snakemake --report``.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files

TEMPLATE = "template.html"


def safe_json(data) -> str:
    """``data`` as JSON that is inert inside an HTML ``<script>`` element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def render_page(data: dict, title: str, template_name: str = TEMPLATE) -> str:
    """The complete HTML page for ``data`` (see :func:`workflow.review.page.page_data`); ``template_name``: a
    template of this package (``discovery.html``: the discovery page). ``data["lazy"]``, when the template has a
    ``__LAZY__`` block after ``__DATA__``, goes there: the page parses it only when it needs it."""
    template = files("workflow.review").joinpath(template_name).read_text(encoding="utf-8")
    for marker in ("__TITLE__", "__DATA__"):
        if template.count(marker) != 1:
            raise ValueError(f"{template_name} must hold {marker} exactly once")
    if "__COMMON__" in template:  # the helpers both pages share (their own code, not data)
        template = template.replace("__COMMON__", files("workflow.review").joinpath("common.js").read_text("utf-8"))
    head, rest = template.split("__TITLE__")
    middle, tail = rest.split("__DATA__")
    lazy = data.get("lazy", {})
    if "__LAZY__" in tail:  # replaced in the template's own text, never inside the data
        tail = tail.replace("__LAZY__", safe_json(lazy), 1)
    data = {k: v for k, v in data.items() if k != "lazy"}
    return head + html.escape(title) + middle + safe_json(data) + tail
