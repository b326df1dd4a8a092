import math

import numpy as np

from metrics import overlap
from shapes import cube


def test_offset_cubes_exact_counts_and_ratios():
    shape = (20, 20, 20)
    a = cube(shape, (2, 2, 2), (10, 10, 10))      # 1000 voxels
    b = cube(shape, (4, 2, 2), (10, 10, 10))      # shifted 2 slices: overlap 8 * 100 = 800
    c = overlap.confusion(a, b)
    assert (c.tp, c.fp, c.fn, c.tn) == (800, 200, 200, 8000 - 1200)
    m = overlap.overlap_metrics(c)
    assert m["dice"] == 2 * 800 / 2000
    assert m["jaccard"] == 800 / 1200
    assert m["precision"] == 0.8 and m["recall"] == 0.8
    assert m["fpr"] == 200 / (200 + 6800)
    assert math.isclose(m["fnr"], 0.2)


def test_crop_with_total_gives_whole_image_tn():
    a = cube((50, 50, 50), (2, 2, 2), (4, 4, 4))
    full = overlap.confusion(a, a)
    crop = overlap.confusion(a[:10, :10, :10], a[:10, :10, :10], total=a.size)
    assert full == crop


def test_empty_policy():
    z = np.zeros((5, 5, 5), bool)
    a = cube((5, 5, 5), (1, 1, 1), (2, 2, 2))
    missed = overlap.overlap_metrics(overlap.confusion(z, a))
    assert missed["dice"] == 0 and missed["precision"] == 0 and missed["recall"] == 0 and missed["fnr"] == 1
    invented = overlap.overlap_metrics(overlap.confusion(a, z))
    assert invented["dice"] == 0 and invented["precision"] == 0 and math.isnan(invented["recall"])
    both = overlap.overlap_metrics(overlap.confusion(z, z))
    assert math.isnan(both["dice"]) and math.isnan(both["jaccard"]) and both["fpr"] == 0
