"""Tumour-board report speed and size (issue 19: a 10-lesion case < 10 s on these 2 cores with the 3D views,
a 200-lesion case paginates and finishes < 60 s, a typical PDF < 5 MB).

The cases are built BEFORE the clock starts: a demo-sized phantom (160 x 256 x 256 voxels, 2 x 1.25 x 1.25 mm)
with 8 lesions plus 2 painted spheres (10 lesions), and a 200-lesion grid case (a block liver with 200 small
cubes of lesion on a 120 x 256 x 256 grid). What is timed is everything ``main.py report`` does after reading
the files: measure, plan (segments, lesion locations, two hepatectomy scenarios), the 3D views and remnants,
the key images, the HTML and the PDF (and the DICOM wrapper).

Run:  .venv/bin/python benchmarks/board_report_speed.py [--only 10|200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.board_report import BoardOptions, build_report, write_report  # noqa: E402
from engine.case import Case  # noqa: E402
from engine.geometry import Geometry  # noqa: E402
from engine.labels import Label  # noqa: E402
from engine.phantom import DEMO_SPACING, make_phantom  # noqa: E402


def ten_lesion_case() -> Case:
    case = make_phantom(seed=23, shape=(160, 256, 256), spacing=DEMO_SPACING, n_lesions=8)
    lab = case.labels
    from scipy import ndimage

    # two more spheres (r 6 mm) where the liver is deepest and far from the other lesions
    depth = ndimage.distance_transform_edt(lab == Label.PARENCHYMA, sampling=case.geometry.spacing)
    zz, yy, xx = np.indices(lab.shape, sparse=True)
    sz, sy, sx = case.geometry.spacing
    for _ in range(2):
        far = ndimage.distance_transform_edt(lab != Label.CRLM, sampling=case.geometry.spacing)
        c = np.unravel_index(np.argmax(np.minimum(depth, far / 2)), lab.shape)
        ball = ((zz - c[0]) * sz) ** 2 + ((yy - c[1]) * sy) ** 2 + ((xx - c[2]) * sx) ** 2 <= 36.0
        lab[ball & (lab == Label.PARENCHYMA)] = Label.CRLM
        case.image[ball & (lab == Label.CRLM)] = 45
    return case


def grid_case(n_side=(5, 8, 5)) -> Case:
    shape = (120, 256, 256)
    g = Geometry(shape=shape, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    labels = np.zeros(shape, np.uint8)
    labels[10:110, 30:226, 30:226] = Label.PARENCHYMA
    n = 0
    for z in np.linspace(18, 100, n_side[0]).astype(int):
        for y in np.linspace(40, 210, n_side[1]).astype(int):
            for x in np.linspace(40, 210, n_side[2]).astype(int):
                labels[z:z + 3, y:y + 5, x:x + 5] = Label.CRLM
                n += 1
    assert n == 200, n
    image = np.where(labels == Label.CRLM, 40, np.where(labels > 0, 110, -100)).astype(np.int16)
    return Case(image=image, geometry=g, labels=labels, name="grid200")


def run(name: str, case: Case, formats=("pdf", "html", "dcm")) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        t0 = time.perf_counter()
        rep = build_report(case, BoardOptions())
        t1 = time.perf_counter()
        paths = write_report(rep, tmp, formats)
        t2 = time.perf_counter()
        cpu = time.process_time() - c0
        sizes = {p.suffix: p.stat().st_size / 1e6 for p in paths}
        print(f"{name}: {len(rep.measurements.lesions)} lesions, {len(rep.key_images)} key images, "
              f"{len(rep.views)} 3D views + {len(rep.remnants)} remnants; build {t1 - t0:.1f} s, "
              f"HTML+PDF+DICOM {t2 - t1:.1f} s, total {t2 - t0:.1f} s wall ({cpu:.1f} s CPU, all threads); sizes "
              + ", ".join(f"{k} {v:.2f} MB" for k, v in sizes.items()), flush=True)


def main() -> int:
    import os

    # the CLI's situation: no display, VTK draws offscreen (EGL)
    os.environ.pop("DISPLAY", None)
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("10", "200"))
    a = ap.parse_args()
    if a.only in (None, "10"):
        run("10-lesion phantom (160x256x256)", ten_lesion_case())
    if a.only in (None, "200"):
        run("200-lesion grid (120x256x256)", grid_case())
    return 0


if __name__ == "__main__":
    sys.exit(main())
