"""One self-contained HTML file from a :class:`~engine.reporting.document.Document`.

Everything is inside the file: the CSS, the figures as inline SVG (sharp at any zoom, text searchable),
raster images as data: URIs. No script, no external request, so the file opens offline, in a hospital's
locked-down browser, and as an e-mail attachment. The same HTML, with its print CSS (A4 pages, the footer
and page numbers in the page margins), is what :mod:`engine.reporting.pdf` renders to PDF.
"""
from __future__ import annotations

import base64
import html as _html
import re

from .document import (DefinitionList, Document, Figure, Group, Heading, Image, PageBreak, Paragraph, Table)
from .fonts import CSS_FONT_STACK

_XML_PROLOGUE = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.S)


def esc(text: object) -> str:
    """Text as HTML (every ``<``, ``&`` and quote escaped): names from files are data, never markup."""
    return _html.escape(str(text), quote=True)


def _css_string(text: str) -> str:
    """A CSS string literal (the page footer is given to the print CSS as one)."""
    return "\"" + str(text).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", " ") + "\""


def _css(doc: Document) -> str:
    footer = _css_string(doc.footer) if doc.footer else "none"
    return f"""
:root {{ --ink: #111; --muted: #555; --rule: #bbb; --band: #f2f2f2; }}
html {{ font-family: {CSS_FONT_STACK}; color: var(--ink); font-size: 10.5pt; line-height: 1.35; }}
body {{ max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }}
h1 {{ font-size: 1.55em; margin: 1.2em 0 .4em; border-bottom: 2px solid var(--ink); padding-bottom: .15em; }}
h1.title {{ font-size: 1.9em; border: none; margin-top: 0; }}
h2 {{ font-size: 1.25em; margin: 1em 0 .35em; }}
h3 {{ font-size: 1.05em; margin: .8em 0 .3em; }}
p {{ margin: .35em 0; }}
p.subtitle {{ font-size: 1.1em; color: var(--muted); margin-top: -.3em; }}
p.note, p.caption, .header-lines {{ font-size: .85em; color: var(--muted); }}
p.caption {{ margin-top: .1em; }}
p.warning {{ border: 1.5px solid var(--ink); padding: .35em .6em; font-weight: bold; }}
table {{ border-collapse: collapse; margin: .4em 0; font-variant-numeric: tabular-nums; }}
table.small {{ font-size: .8em; }}
th, td {{ border-bottom: 1px solid var(--rule); padding: .18em .55em; vertical-align: top; }}
th {{ border-bottom: 1.5px solid var(--ink); text-align: left; }}
td.num, th.num {{ text-align: right; white-space: nowrap; }}
tbody tr:nth-child(even) {{ background: var(--band); }}
caption {{ caption-side: top; text-align: left; font-weight: bold; padding-bottom: .2em; }}
ul.table-notes {{ font-size: .8em; color: var(--muted); margin: .2em 0 .6em 1.2em; padding: 0; }}
figure {{ margin: .6em 0; break-inside: avoid; }}
figure svg, figure img {{ max-width: 100%; height: auto; display: block; }}
dl.definitions dt {{ font-weight: bold; margin-top: .35em; }}
dl.definitions dd {{ margin: 0 0 0 1.2em; }}
nav.contents ol {{ margin: .2em 0 .8em 1.2em; padding: 0; }}
div.group {{ break-inside: avoid; }}
div.columns-2 {{ display: flex; flex-wrap: wrap; gap: 1em; }}
div.columns-2 > * {{ flex: 1 1 45%; min-width: 300px; }}
div.page-break {{ break-after: page; height: 0; }}
footer.doc-footer {{ margin-top: 2em; font-size: .8em; color: var(--muted); border-top: 1px solid var(--rule); }}
@page {{ size: A4; margin: 16mm 14mm 18mm 14mm;
  @bottom-left {{ content: {footer}; font-family: {CSS_FONT_STACK}; font-size: 8pt; color: #333; }}
  @bottom-right {{ content: "Page " counter(page) " of " counter(pages); font-family: {CSS_FONT_STACK};
                   font-size: 8pt; color: #333; }} }}
@media print {{
  html {{ font-size: 9.5pt; }}
  body {{ max-width: none; margin: 0; padding: 0; }}
  h1 {{ break-before: auto; break-after: avoid; }}
  h2, h3 {{ break-after: avoid; }}
  tr {{ break-inside: avoid; }}
  div.columns-2 {{ display: block; }}
  div.columns-2 > * {{ display: inline-block; width: 48.5%; vertical-align: top; min-width: 0; }}
  footer.doc-footer {{ display: none; }}
}}
"""


def _svg_inline(svg: str) -> str:
    return _XML_PROLOGUE.sub("", svg, count=1)


def _block(b, anchors: dict) -> str:
    if isinstance(b, Heading):
        level = min(max(int(b.level), 1), 3)
        aid = b.anchor or anchors.get(id(b), "")
        ida = f' id="{esc(aid)}"' if aid else ""
        return f"<h{level}{ida}>{esc(b.text)}</h{level}>"
    if isinstance(b, Paragraph):
        cls = f" class=\"{esc(b.style)}\"" if b.style else ""
        return f"<p{cls}>{esc(b.text)}</p>"
    if isinstance(b, Table):
        small = ' class="small"' if b.small else ""
        num = ' class="num"'
        out = [f"<table{small}>"]
        if b.caption:
            out.append(f"<caption>{esc(b.caption)}</caption>")
        out.append("<thead><tr>" + "".join(
            f"<th{num if (i and b.numeric) else ''}>{esc(h)}</th>" for i, h in enumerate(b.header))
                   + "</tr></thead><tbody>")
        for row in b.rows:
            out.append("<tr>" + "".join(
                f"<td{num if (i and b.numeric) else ''}>{esc(c)}</td>" for i, c in enumerate(row))
                       + "</tr>")
        out.append("</tbody></table>")
        if b.notes:
            out.append("<ul class=\"table-notes\">" + "".join(f"<li>{esc(n)}</li>" for n in b.notes) + "</ul>")
        return "\n".join(out)
    if isinstance(b, Figure):
        cap = f"<figcaption><p class=\"caption\">{esc(b.caption)}</p></figcaption>" if b.caption else ""
        return (f"<figure style=\"width:{esc(b.width)}\" role=\"img\" aria-label=\"{esc(b.alt or b.caption)}\">"
                f"{_svg_inline(b.svg)}{cap}</figure>")
    if isinstance(b, Image):
        data = base64.b64encode(b.png).decode("ascii")
        cap = f"<figcaption><p class=\"caption\">{esc(b.caption)}</p></figcaption>" if b.caption else ""
        return (f"<figure style=\"width:{esc(b.width)}\"><img src=\"data:image/png;base64,{data}\" "
                f"alt=\"{esc(b.alt or b.caption)}\">{cap}</figure>")
    if isinstance(b, DefinitionList):
        return "<dl class=\"definitions\">" + "".join(
            f"<dt>{esc(t)}</dt><dd>{esc(d)}</dd>" for t, d in b.items) + "</dl>"
    if isinstance(b, PageBreak):
        return "<div class=\"page-break\"></div>"
    if isinstance(b, Group):
        cls = "group columns-2" if b.columns == 2 else "group"
        return f"<div class=\"{cls}\">" + "\n".join(_block(x, anchors) for x in b.blocks) + "</div>"
    raise TypeError(f"not a report block: {type(b).__name__}")


def render_html(doc: Document) -> str:
    """The document as one self-contained HTML5 page (UTF-8)."""
    anchors: dict = {}
    toc = []
    for i, b in enumerate(doc.blocks):
        if isinstance(b, Heading) and b.level == 1:
            anchors[id(b)] = b.anchor or f"s{i}"
            toc.append((anchors[id(b)], b.text))
    meta = "".join(f"<meta name=\"{esc(k)}\" content=\"{esc(v)}\">" for k, v in doc.meta.items()
                   if k in ("author", "description", "keywords", "generator"))
    parts = [f"<!DOCTYPE html>\n<html lang=\"{esc(doc.language)}\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             f"<title>{esc(doc.meta.get('title', doc.title))}</title>{meta}<style>{_css(doc)}</style></head><body>",
             f"<h1 class=\"title\">{esc(doc.title)}</h1>"]
    if doc.subtitle:
        parts.append(f"<p class=\"subtitle\">{esc(doc.subtitle)}</p>")
    if doc.header_lines:
        parts.append("<div class=\"header-lines\">" + "".join(f"<div>{esc(h)}</div>" for h in doc.header_lines)
                     + "</div>")
    if doc.footer:
        parts.append(f"<p class=\"warning\">{esc(doc.footer)}</p>")
    if doc.contents and len(toc) > 1:
        parts.append("<nav class=\"contents\"><ol>" + "".join(
            f"<li><a href=\"#{esc(a)}\">{esc(t)}</a></li>" for a, t in toc) + "</ol></nav>")
    parts.extend(_block(b, anchors) for b in doc.blocks)
    parts.append(f"<footer class=\"doc-footer\">{esc(doc.footer + ' · ' if doc.footer else '')}"
                 f"Made {esc(doc.created_text())}</footer></body></html>\n")
    return "\n".join(parts)
