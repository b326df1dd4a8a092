"""matplotlib figures for reports: the house style, structure colours, grey-print safety, SVG output.

Figures are made with ``matplotlib.figure.Figure`` and the Agg/SVG canvases directly (never pyplot), so
no global figure state is touched and a report can be built in a worker thread while the window runs.

Grey print: the study's structure colours (engine.labels) are kept, but no plot relies on hue alone —
boxes have black outlines, the models of a comparison differ by marker shape and hatch, lines by dash
pattern, and error overlays by hatch direction as well as colour.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Iterator, Optional

from .fonts import matplotlib_families

#: Markers / hatches / dashes that tell series apart without colour (first = model A, second = model B).
MARKERS = ("o", "s", "^", "D")
HATCHES = ("", "///", "\\\\\\", "xx")
DASHES = ("-", "--", ":", "-.")


def _rc() -> dict:
    return {
        "font.family": list(matplotlib_families()),
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.labelsize": 8.5,
        "axes.edgecolor": "#222222",
        "axes.linewidth": 0.8,
        "axes.grid": True,
        "grid.color": "#d0d0d0",
        "grid.linewidth": 0.5,
        "axes.axisbelow": True,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        # text stays text in the SVG: searchable, selectable, small, and drawn by the viewer's fonts with
        # their per-glyph fallback
        "svg.fonttype": "none",
        "svg.hashsalt": "liverplan",   # reproducible ids: the same report gives the same bytes
        "path.simplify": True,
    }


@contextmanager
def style() -> Iterator[None]:
    """The house style for figures made inside the block."""
    import matplotlib

    with matplotlib.rc_context(_rc()):
        yield


def new_figure(width_in: float, height_in: float, layout: Optional[str] = "constrained"):
    """A Figure (Agg canvas, no pyplot) of the given size in inches; call inside :func:`style`.

    layout: "constrained" (matplotlib places labels and legends; it redraws the figure to measure them,
    which costs ~0.3 s a figure) or None for figures that set their margins themselves (the many
    worst-case pictures of a big cohort)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_svg(fig) -> str:
    """The figure as an SVG document (text as text)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_rc()):
        # dpi: only for parts drawn rasterized=True (dense dots); vectors do not depend on it
        fig.savefig(buf, format="svg", dpi=200, metadata={"Date": None, "Creator": "LiverPlan"})
    return buf.getvalue()


def figure_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (for raster content such as CT slices)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(_rc()):
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def rgb(color255) -> tuple[float, float, float]:
    """An engine.labels colour (0-255) as matplotlib's 0-1 RGB."""
    return tuple(c / 255.0 for c in color255)
