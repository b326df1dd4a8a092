"""What the panes draw, computed in engine/: outline mode, the ruler and angle values, the IVC colour."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engine.labels import BY_LABEL, Label
from engine.overlay import angle_deg, distance_mm, outline_plane


def _contrast_to_black(rgb) -> float:
    """WCAG contrast ratio of a colour against black."""
    def lin(c):
        c = c / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(v) for v in rgb)
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (lum + 0.05) / 0.05


def test_outline_keeps_the_margin_and_shows_the_inside():
    plane = np.zeros((40, 40), np.uint8)
    plane[5:35, 5:35] = Label.PARENCHYMA
    plane[15:25, 15:25] = Label.CRLM                  # a lesion inside the liver
    out = outline_plane(plane)
    # the lesion: its 10 x 10 square's border (36 pixels), nothing inside
    assert np.count_nonzero(out == Label.CRLM) == 36
    assert out[20, 20] == 0 and out[15, 20] == Label.CRLM
    # the liver: its outer border and its border around the lesion
    assert out[5, 20] == Label.PARENCHYMA and out[14, 20] == Label.PARENCHYMA and out[10, 20] == 0
    # a structure cut by the slice's edge is closed along the edge
    edge = np.full((5, 5), Label.PARENCHYMA, np.uint8)
    assert np.count_nonzero(outline_plane(edge)) == 16


def test_ruler_and_angle_values():
    assert distance_mm((0, 0), (30, 40)) == pytest.approx(50.0)
    assert angle_deg((10, 0), (0, 0), (0, 5)) == pytest.approx(90.0)
    assert angle_deg((1, 1), (0, 0), (-1, -1)) == pytest.approx(180.0)
    assert math.isnan(angle_deg((0, 0), (0, 0), (1, 0)))


def test_ivc_colour_reads_on_black_and_differs_from_the_hepatic_veins():
    ivc, hv = BY_LABEL[Label.IVC].color, BY_LABEL[Label.HEPATIC_VEINS].color
    assert _contrast_to_black(ivc) >= 3.0                 # WCAG's minimum for graphics
    assert _contrast_to_black((16, 30, 120)) < 1.5        # the former dark blue: all but invisible
    assert ivc[2] > max(ivc[0], ivc[1])                   # still a blue ("dark blue" in the study's figure)
    assert sum(abs(a - b) for a, b in zip(ivc, hv)) >= 60  # told apart from the hepatic veins
