"""PDF from the report's HTML, with WeasyPrint.

Why WeasyPrint (measured here, see the README's "Metric reports" section): it renders the SAME HTML and
print CSS the HTML report uses (one layout to maintain, page footers and numbers from CSS), draws inline
SVG as vectors, embeds subsets of the fonts, and falls back per glyph through fontconfig, so names in any
script print (Müller, 肝臓, Łódź all came back from the PDF's text). It is Python over Pango (a system
library: on Linux a distribution package, on Windows / macOS installed beside it — the installer must bundle
it), needs no display and no browser, and adds ~3 MB of Python packages. reportlab has no per-glyph fallback
(肝臓 was silently dropped) and needs its own layout code; matplotlib's PDF backend has no text flow or tables.
"""
from __future__ import annotations

import logging
from typing import Optional

from ..errors import ExportError

log = logging.getLogger(__name__)


def pdf_available() -> Optional[str]:
    """None when PDFs can be made here, else the reason in words (missing WeasyPrint or Pango)."""
    try:
        import weasyprint  # noqa: F401
    except ImportError:
        return "the PDF writer (the Python package 'weasyprint') is not installed"
    except OSError as err:          # Pango (a system library) missing
        return f"the PDF writer cannot start: a system library is missing ({err})"
    return None


def html_to_pdf(html_text: str, title: str = "", meta: Optional[dict] = None) -> bytes:
    """Render ``html_text`` (from :func:`engine.reporting.html.render_html`) to PDF bytes.

    No network: WeasyPrint is given a URL fetcher that refuses every URL, so a report can only show what
    is embedded in it. The PDF's metadata carries ``title`` and the generator only (plus ``meta``'s
    author/subject/keywords when given).
    """
    why = pdf_available()
    if why:
        raise ExportError(f"No PDF could be written: {why}.")
    import weasyprint

    # data: URIs only (the report's own images); any other URL is refused, never fetched
    fetcher = weasyprint.urls.URLFetcher(allowed_protocols=("data",), fail_on_errors=False)

    # WeasyPrint logs every CSS property it does not support (flex gap...) as a warning: quiet them
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    doc = weasyprint.HTML(string=html_text, url_fetcher=fetcher, base_url=".").render()
    m = doc.metadata
    m.title = title or m.title
    m.generator = "LiverPlan"
    if meta:
        if meta.get("author"):
            m.authors = [str(meta["author"])]
        if meta.get("description"):
            m.description = str(meta["description"])
    return doc.write_pdf()
