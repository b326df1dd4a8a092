"""Measurement speed: engine.measure vs a straightforward (naive) implementation, side by side.

Case: a 512 x 512 x 300 phantom (0.75 x 0.75 x 1.0 mm) with 10 lesions (the phantom's 8 plus two spheres
painted into the parenchyma), and, when ../shared/data/real is present, 3D-IRCADb-01 patient 17.

Naive peer: scipy.ndimage.label (26-connectivity) on the whole volume, then per lesion whole-volume masks
(volume, centroid, mean HU, slices) and brute-force diameters over all surface voxels; per structure
whole-volume masks for volume/mean/SD; the filled liver outline with a disk closing + scipy hole filling
on the liver's bounding box. Both must agree on every number; the script prints the times and the ratio.

Run:  .venv/bin/python benchmarks/measure_speed.py  [--repeat 3] [--no-real]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.geometry import Geometry  # noqa: E402
from engine.labels import Label  # noqa: E402
from engine.measure import OUTLINE_CLOSING_MM, measure  # noqa: E402


def naive_measure(image: np.ndarray, labels: np.ndarray, geometry: Geometry) -> dict:
    from scipy.ndimage import (binary_closing, binary_erosion, binary_fill_holes, find_objects, label)
    from scipy.spatial.distance import pdist

    sp = np.asarray(geometry.spacing, float)
    vox = geometry.voxel_volume_ml
    out = {"structures": {}}
    for lab in range(1, 6):
        m = labels == lab
        n = int(m.sum())
        vals = image[m].astype(np.float64)
        out["structures"][lab] = (n * vox, float(vals.mean()) if n else float("nan"))
    # Total liver: disk closing per slice + hole filling per slice, on the liver's bounding box.
    liver = (labels == Label.PARENCHYMA) | (labels == Label.CRLM)
    bb = find_objects(liver.astype(np.uint8))[0]
    k = int(round(OUTLINE_CLOSING_MM / sp[1]))
    bb = (bb[0], slice(max(0, bb[1].start - k - 1), bb[1].stop + k + 1),
          slice(max(0, bb[2].start - k - 1), bb[2].stop + k + 1))
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    disk = ((yy * sp[1]) ** 2 + (xx * sp[2]) ** 2 <= OUTLINE_CLOSING_MM ** 2)[None]
    closed = binary_closing(liver[bb], structure=disk) | liver[bb]
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    filled = binary_fill_holes(closed, structure=plane)
    sub = labels[bb]
    vessels = int(np.count_nonzero(filled & ((sub == 2) | (sub == 3))))
    out["total_liver_ml"] = (int(liver.sum()) + vessels) * vox
    # Lesions: whole-volume label + per-lesion whole-volume operations.
    cc, n = label(labels == Label.CRLM, structure=np.ones((3, 3, 3)))
    les = []
    for i in range(1, n + 1):
        m = cc == i
        zyx = np.argwhere(m)
        surf = np.argwhere(m & ~binary_erosion(m))
        pts = surf * sp
        d3 = float(pdist(pts).max()) if len(pts) > 1 else 0.0
        dax = 0.0
        for z in np.unique(surf[:, 0]):
            p2 = pts[surf[:, 0] == z][:, 1:]
            if len(p2) > 1:
                dax = max(dax, float(pdist(p2).max()))
        les.append((len(zyx) * vox, d3, dax, zyx.mean(axis=0), float(image[m].mean())))
    les.sort(key=lambda r: -r[0])
    out["lesions"] = les
    return out


def make_case(shape=(300, 512, 512), spacing=(1.0, 0.75, 0.75)):
    from engine.phantom import make_phantom

    case = make_phantom(seed=4, shape=shape, spacing=spacing, n_lesions=8)
    lab, img, g = case.labels, case.image, case.geometry
    # Two more spheres (7 mm and 12 mm diameter) well inside the parenchyma, away from other labels.
    from scipy.ndimage import distance_transform_edt

    par = lab == Label.PARENCHYMA
    small = par[::4, ::4, ::4]
    d = distance_transform_edt(small, sampling=np.asarray(g.spacing) * 4)
    d[(lab[::4, ::4, ::4] != Label.PARENCHYMA)] = 0
    added = 0
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    for diam in (12.0, 7.0):
        c = np.array(np.unravel_index(np.argmax(d), d.shape)) * 4
        r = diam / 2
        ball = (((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2
                + ((xx - c[2]) * spacing[2]) ** 2) <= r * r
        lab[ball & (lab == Label.PARENCHYMA)] = Label.CRLM
        img[ball] = 45
        # Keep the next sphere far from this one.
        dz, dy, dx = np.ogrid[:d.shape[0], :d.shape[1], :d.shape[2]]
        d[(((dz * 4 - c[0]) * spacing[0]) ** 2 + ((dy * 4 - c[1]) * spacing[1]) ** 2
           + ((dx * 4 - c[2]) * spacing[2]) ** 2) < 60 ** 2] = 0
        added += 1
    return img, lab, g


def compare(name: str, img, lab, g, repeat: int) -> None:
    fast_t, naive_t = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        rep = measure(img, lab, g)
        fast_t.append(time.perf_counter() - t)
    t = time.perf_counter()
    ref = naive_measure(img, lab, g)
    naive_t.append(time.perf_counter() - t)
    # Agreement.
    assert len(rep.lesions) == len(ref["lesions"]), (len(rep.lesions), len(ref["lesions"]))
    for l, (v, d3, dax, c, hu) in zip(rep.lesions, ref["lesions"]):
        assert abs(l.volume_ml - v) < 1e-3 and abs(l.longest_diameter_mm - d3) < 0.02 \
            and abs(l.axial_diameter_mm - dax) < 0.02 and np.allclose(l.centroid_zyx, c, atol=0.01), (l, v, d3, dax)
    tl_fast, tl_naive = rep.value("liver.total_volume_ml"), ref["total_liver_ml"]
    print(f"{name}: {g.describe()}, {len(rep.lesions)} lesions")
    print(f"  total liver volume: engine {tl_fast:.1f} mL (square closing), naive {tl_naive:.1f} mL "
          f"(disk closing); lesion table identical")
    print(f"  engine.measure   best of {repeat}: {min(fast_t):.2f} s")
    print(f"  naive measure    once: {naive_t[0]:.2f} s")
    print(f"  ratio naive / engine: {naive_t[0] / min(fast_t):.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()
    print(f"CPU cores visible: {os.cpu_count()}")
    t = time.perf_counter()
    img, lab, g = make_case()
    print(f"(phantom 512x512x300 built in {time.perf_counter() - t:.1f} s)")
    compare("phantom 512x512x300", img, lab, g, args.repeat)
    del img, lab
    real = REPO.parent / "shared" / "data" / "real" / "3dircadb1.17"
    if not args.no_real and real.exists():
        from engine.io import load_case, read_label_map
        from engine.labelmap import LabelMapping

        case = load_case(real / "PATIENT_DICOM.nii.gz")
        lab = read_label_map(real / "masks", case, LabelMapping.preset("ircadb"))
        compare("3D-IRCADb-01 patient 17", case.image, lab, case.geometry, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
