"""Building blocks for the self-contained HTML report.

Figures are embedded as base64 PNG so the page needs no network and no side
files. Every figure can carry the MLflow run id that produced it.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Sequence


def escape(text: Any) -> str:
    """Escape any value for HTML text."""
    return html.escape(str(text))


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a table; missing or non-finite values read 'undefined'."""
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "undefined"
        return f"{value:.{digits}f}"
    return escape(value)


def fmt_ci(estimate: Any, low: Any, high: Any, digits: int = 3) -> str:
    """Format ``estimate [low, high]``; an undefined estimate reads 'undefined'."""
    if estimate is None or (isinstance(estimate, float) and not math.isfinite(estimate)):
        return "undefined"
    if low is None or high is None:
        return fmt(estimate, digits)
    return f"{fmt(estimate, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None, css_class: str = "") -> str:
    """Return an HTML table; cells that are already HTML must be wrapped in :class:`Raw`."""
    parts = [f'<table class="{escape(css_class)}">']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in rows:
        cells = "".join(f"<td>{c.html if isinstance(c, Raw) else fmt(c)}</td>" for c in row)
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


class Raw:
    """A cell or fragment that is already HTML and must not be escaped."""

    def __init__(self, html_text: str):
        self.html = html_text


def figure(png: str | Path, caption: str, run_id: str | None = None, alt: str | None = None) -> str:
    """Return a figure with the PNG embedded and, if known, its MLflow run id."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    source = f' <span class="runref">MLflow run <code>{escape(run_id)}</code></span>' if run_id else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt or caption)}"/>'
        f"<figcaption>{escape(caption)}{source}</figcaption></figure>"
    )


def section(anchor: str, title: str, body: str) -> str:
    """Return a report section with an anchor for the table of contents."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def paragraph(text: str) -> str:
    """Return an escaped paragraph."""
    return f"<p>{escape(text)}</p>"


def bullet_list(items: Iterable[str]) -> str:
    """Return an escaped bullet list."""
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"
