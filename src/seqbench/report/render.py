"""A report is written once, as markdown (``report.md``); ``report.html`` is that markdown rendered
by markdown-it (CommonMark + tables; raw HTML in the text is escaped, so ``<unk>`` stays visible),
with every image embedded as base64, so the html is one self-contained file."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import unquote

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
         "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
         "th{background:#eee}img{max-width:100%}")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def image(path: Path, alt: str) -> list[str]:
    """Markdown lines of an image next to the report (embedded in the html)."""
    return [f"![{alt}]({path.name})", ""]


def to_html(markdown: str, title: str, image_dir: Path) -> str:
    """The markdown as one html page; images found in ``image_dir`` become data: URIs."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                path = image_dir / unquote(str(child.attrGet("src")))
                if path.is_file():
                    child.attrSet("src", "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())
    body = md.renderer.render(tokens, md.options, {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")


def write(out_dir: Path, lines: list[str], title: str) -> None:
    """``report.md`` and its rendering ``report.html`` in ``out_dir``."""
    text = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.html").write_text(to_html(text, title, out_dir))
