"""The document model: what a report says, independent of how it is written (HTML, PDF).

Blocks are plain dataclasses; text is plain text (the writers escape it), never markup, so a case name
or a patient name from a file can never inject HTML into a report.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union


@dataclass
class Heading:
    """A section title; level 1 (document part) to 3."""

    text: str
    level: int = 1
    anchor: str = ""          # id for links from the contents list (filled by the writer when empty)


@dataclass
class Paragraph:
    """Plain text. ``style``: "" (body), "note" (small print), "warning" (boxed), "caption"."""

    text: str
    style: str = ""


@dataclass
class Table:
    """A table of text cells. The first column is a row title; ``numeric`` columns are right-aligned."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    notes: Sequence[str] = ()
    numeric: bool = True      # cells after the first column align right
    small: bool = False       # smaller type for wide tables


@dataclass
class Figure:
    """A vector figure: an SVG document (from :func:`engine.reporting.plots.figure_svg`)."""

    svg: str
    caption: str = ""
    width: str = "100%"       # CSS width on the page
    alt: str = ""


@dataclass
class Image:
    """A raster image (PNG bytes), embedded as a data: URI."""

    png: bytes
    caption: str = ""
    width: str = "100%"
    alt: str = ""


@dataclass
class DefinitionList:
    """Terms and their definitions (metric definitions, policies)."""

    items: Sequence[tuple[str, str]]


@dataclass
class PageBreak:
    """Start a new page in print (PDF); nothing on screen."""


@dataclass
class Group:
    """Blocks kept together on one printed page where possible (a figure with its table)."""

    blocks: Sequence["Block"]
    columns: int = 1          # side by side on wide screens and in print


Block = Union[Heading, Paragraph, Table, Figure, Image, DefinitionList, PageBreak, Group]


@dataclass
class Document:
    """A report: title, a few header lines, blocks, and a line printed at the foot of every page.

    ``meta`` ends up in the PDF's and the HTML's metadata (title, author, subject...): put nothing there that
    must not leave the hospital (a report made anonymised must not name the patient in its metadata).
    """

    title: str
    blocks: list = field(default_factory=list)
    subtitle: str = ""
    header_lines: Sequence[str] = ()
    footer: str = ""                      # every printed page, e.g. "demo model — not for clinical use"
    language: str = "en"
    meta: dict = field(default_factory=dict)
    created: Optional[_dt.datetime] = None
    contents: bool = True                 # a list of the level-1 headings after the title

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self

    def created_text(self) -> str:
        when = self.created or _dt.datetime.now().astimezone()
        return when.strftime("%Y-%m-%d %H:%M %Z").strip()
