"""Analytic test shapes (boolean (z, y, x) arrays) shared by the metric tests."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def cube(shape, lo, size):
    m = np.zeros(shape, bool)
    m[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]] = True
    return m


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    d2 = (((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2
          + ((xx - centre[2]) * spacing[2]) ** 2)
    return d2 <= radius ** 2


def torus(shape=(16, 40, 40), R=12.0, r=3.5):
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    c = np.array(shape) / 2 - 0.5
    q = np.sqrt((yy - c[1]) ** 2 + (xx - c[2]) ** 2) - R
    return q ** 2 + (zz - c[0]) ** 2 <= r ** 2


def hollow_sphere(shape=(30, 30, 30), r_out=12.0, r_in=7.0):
    c = np.array(shape) / 2 - 0.5
    return ball(shape, c, r_out) & ~ball(shape, c, r_in)


def tube(shape, p0, p1, radius):
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0, 1)
    dist2 = (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    return dist2 <= radius ** 2


def vessel_tree_with_loops(shape=(40, 48, 48), n_loops=2):
    """A trunk with branches; ``n_loops`` extra segments join branch tips, each closing one loop."""
    m = tube(shape, (5, 24, 24), (35, 24, 24), 2.2)
    tips = [(30, 10, 10), (30, 10, 38), (30, 38, 10), (30, 38, 38)]
    for tip in tips:
        m |= tube(shape, (18, 24, 24), tip, 1.6)
    links = [((30, 10, 10), (30, 10, 38)), ((30, 38, 10), (30, 38, 38))][:n_loops]
    for a, b in links:
        m |= tube(shape, a, b, 1.6)
    return m


def blob(shape, seed, sigma=2.5, thr=0.5):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), sigma) > thr
