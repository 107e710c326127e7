"""A table's HTML page for the Snakemake report: its Markdown file rendered as one self-contained page.

Every table builder writes `tables/<name>.md` (the paper tables, the learning table, the per-rule
resources, the data summary); the report shows the same text, tables and notes, as HTML instead of
the long-form CSV. Rendered as GitHub renders the Markdown (CommonMark with GFM tables, markdown-it-py),
raw HTML in the Markdown escaped; numeric cells (numbers, `n/c`, `–`, `n/a`, `missing`) are set
right-aligned in tabular figures.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

# A cell that holds a number: 22.19, +0.12, −1.3, 318M, 1.2B, 2^18, 12.5 %, 0:01:02, or a placeholder
NUMERIC = re.compile(r"[+\-−]?\d[\d,.:]*(\s?[KMBG%]|\^\d+)?|n/c|n/a|–|-|missing")
_CELL = re.compile(r"<td>(.*?)</td>", re.S)

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; vertical-align: top; }
th { background: #f6f8fa; text-align: left; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
li { margin: 0.15em 0; }
code { font-size: 12px; }
"""


def _numeric_cells(body: str) -> str:
    def mark(match: re.Match[str]) -> str:
        text = html.unescape(match.group(1)).strip()
        return f'<td class="num">{match.group(1)}</td>' if NUMERIC.fullmatch(text) else match.group(0)

    return _CELL.sub(mark, body)


def render(markdown: str) -> str:
    """The HTML body of `markdown` (CommonMark + GFM tables; raw HTML escaped)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return _numeric_cells(md.render(markdown))


def page(markdown: str, title: str) -> str:
    """A complete, self-contained HTML page of `markdown` (no external resources) titled `title`."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{render(markdown)}</body>\n</html>\n"
    )
