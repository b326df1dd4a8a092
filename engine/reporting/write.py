"""Write a report as HTML and PDF, atomically (nothing half-written is left on failure)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Union

from ..errors import ExportError
from ..io.atomic import write_bytes_atomic, write_text_atomic
from .document import Document
from .html import render_html
from .pdf import html_to_pdf, pdf_available

log = logging.getLogger(__name__)

FORMATS = ("html", "pdf")


def check_targets(out_dir: Union[str, Path], stem: str = "report", formats: Sequence[str] = FORMATS,
                  overwrite: bool = False) -> None:
    """Refuse, before any work, report files that exist (unless ``overwrite``) or formats unknown."""
    out = Path(out_dir).expanduser()
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"Unknown report format(s): {', '.join(bad)} (choose from html, pdf).")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; a report is written into a folder.")
    if not overwrite:
        there = [str(out / f"{stem}.{f}") for f in formats if (out / f"{stem}.{f}").exists()]
        if there:
            raise ExportError(f"{', '.join(there)} already exist(s); choose another folder or allow overwriting "
                              "(--overwrite).")


def write_document(doc: Document, out_dir: Union[str, Path], stem: str = "report",
                   formats: Sequence[str] = FORMATS, overwrite: bool = False) -> list[Path]:
    """Write ``doc`` as ``out_dir/<stem>.html`` and/or ``.pdf``; returns the paths written.

    Both targets are checked before either is written, and the PDF is rendered before anything is
    written, so a refused or failed export leaves nothing half-done.
    """
    out = Path(out_dir).expanduser()
    check_targets(out, stem, formats, overwrite)
    targets = {f: out / f"{stem}.{f}" for f in formats}
    html_text = render_html(doc)
    # a machine without the PDF writer (no WeasyPrint / Pango) still gets the HTML, and is told why no PDF
    why = pdf_available() if "pdf" in targets else None
    pdf = html_to_pdf(html_text, title=doc.meta.get("title", doc.title), meta=doc.meta) \
        if "pdf" in targets and not why else None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "html" in targets:
        written.append(write_text_atomic(targets["html"], html_text, overwrite=overwrite))
    if pdf is not None:
        written.append(write_bytes_atomic(targets["pdf"], pdf, overwrite=overwrite))
    if why:
        raise ExportError(f"No PDF could be written: {why}."
                          + (f" The HTML report was written: {written[0]}." if written else ""))
    return written
