"""The document engine shared by LiverPlan's reports (metric report, tumour-board report).

A report is a :class:`~engine.reporting.document.Document` (a list of blocks: headings, paragraphs, tables,
SVG figures, PNG images, page breaks); :func:`~engine.reporting.html.render_html` writes it as ONE
self-contained HTML file (CSS inline, SVG inline, PNG as data: URIs, no external request), and
:func:`~engine.reporting.pdf.html_to_pdf` renders that same HTML to PDF with WeasyPrint (fonts embedded;
fontconfig falls back per glyph, so Müller, 肝臓 and Łódź print). :func:`write_document` writes both
atomically. Nothing here imports Qt; plots come from :mod:`engine.reporting.plots` (matplotlib, Agg, no pyplot
state, safe in a worker thread).
"""
from __future__ import annotations

from .document import (Block, DefinitionList, Document, Figure, Heading, Image, PageBreak, Paragraph, Table)
from .write import write_document

__all__ = ["Block", "DefinitionList", "Document", "Figure", "Heading", "Image", "PageBreak", "Paragraph", "Table",
           "write_document"]
