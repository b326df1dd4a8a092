"""Two time points: registration speed and accuracy, LiverPlan's liver-focused method against a plain
full-image SimpleITK registration (the peer), on the same pair of scans, side by side.

The pair: a phantom of SIZE (default 512 x 512 x 300 voxels) and a synthetic follow-up of it
(engine.compare.synthetic: a known smooth deformation, a shift, another field of view, lesions shrunk /
grown / split / vanished / new). Accuracy: the distance between where each method sends 400 baseline liver
points and where the known deformation sends them (mm).

The peer is SimpleITK's tutorial recipe on the whole images, no liver mask: centred initialisation, rigid ->
affine (Mattes mutual information, 1 % random sampling, shrink 4-2-1) -> cubic B-spline (10^3 mesh,
LBFGSB, shrink 4-2).

    nice -n 5 .venv/bin/python benchmarks/compare_speed.py [--size 300,512,512] [--no-peer] [--cache FILE]

Goals (issue 22): LiverPlan's registration < 60 s on 2 cores; matching + tables < 1 s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peer_registration(base, fu):
    import SimpleITK as sitk

    def img(c):
        im = sitk.GetImageFromArray(c.image.astype(np.float32))
        c.geometry.apply_to(im)
        return im

    fixed, moving = img(base), img(fu)
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)

    def method(shrink, smooth):
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(50)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.01, seed=1)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetShrinkFactorsPerLevel(shrink)
        r.SetSmoothingSigmasPerLevel(smooth)
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return r

    r = method([4, 2, 1], [2, 1, 0])
    r.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
                                    convergenceWindowSize=10)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(init, inPlace=True)
    r.Execute(fixed, moving)
    aff = sitk.AffineTransform(3)
    aff.SetCenter(init.GetCenter())
    aff.SetMatrix(init.GetMatrix())
    aff.SetTranslation(init.GetTranslation())
    r = method([4, 2, 1], [2, 1, 0])
    r.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
                                    convergenceWindowSize=10)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(aff, inPlace=True)
    r.Execute(fixed, moving)
    bs = sitk.BSplineTransformInitializer(fixed, [10, 10, 10], 3)
    r = method([4, 2], [2, 1])
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=50)
    r.SetMovingInitialTransform(aff)
    r.SetInitialTransform(bs, inPlace=True)
    r.Execute(fixed, moving)
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(aff)
    comp.AddTransform(bs)
    return comp


def errors(transform_point, truth, pts):
    got = np.array([transform_point(tuple(map(float, p))) for p in pts])
    e = np.linalg.norm(truth.to_baseline(got) - pts, axis=1)
    return float(e.mean()), float(np.percentile(e, 95))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="300,512,512", help="z,y,x voxels of the baseline phantom")
    ap.add_argument("--no-peer", action="store_true", help="skip the full-image peer registration")
    ap.add_argument("--cache", metavar="FILE", help="keep the built pair in FILE (pickle) and reuse it next time")
    args = ap.parse_args()
    from engine.compare import Comparison
    from engine.compare.synthetic import make_followup
    from engine.labels import Label
    from engine.phantom import make_phantom

    shape = tuple(int(v) for v in args.size.split(","))
    import pickle

    t = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        with open(cache, "rb") as fh:
            base, fu, truth = pickle.load(fh)
    else:
        base = make_phantom(seed=3, shape=shape, n_lesions=5, lesion_diameters_mm=(30, 24, 22, 20, 16))
        fu, truth = make_followup(base, {1: ("shrink", 0.5), 2: ("grow", 1.5), 3: ("split",), 4: ("vanish",)},
                                  new_lesions=(18,))
        if cache is not None:
            with open(cache, "wb") as fh:
                pickle.dump((base, fu, truth), fh, protocol=4)
    print(f"pair built in {time.perf_counter() - t:.1f} s: baseline {base.geometry.describe()}; "
          f"follow-up {fu.geometry.describe()}")
    liver = np.argwhere(base.labels == Label.PARENCHYMA)
    pts = base.geometry.index_to_physical(liver[np.random.default_rng(0).choice(len(liver), 400, replace=False)])

    comp = Comparison(base, fu)
    t = time.perf_counter()
    comp.run()
    t_run = time.perf_counter() - t
    t = time.perf_counter()
    rows = comp.rows()
    comp.recist()
    comp.volumetric()
    comp.summary_text()
    t_tables = time.perf_counter() - t
    t_reg = comp.seconds["registration"]
    t_match = comp.seconds["matching"]
    m, p = errors(comp.registration.transform.TransformPoint, truth, pts)
    t = time.perf_counter()
    comp.followup_labels_on_baseline()
    t_resample = time.perf_counter() - t
    print(f"LiverPlan registration (liver-focused): {t_reg:.1f} s; error in the liver {m:.2f} mm mean, "
          f"{p:.2f} mm p95; residual surface distance {comp.registration.residual_mean_mm:.2f} / "
          f"{comp.registration.residual_p95_mm:.2f} mm")
    print(f"matching: {t_match:.2f} s; tables (rows, RECIST, volumetric, summary): {t_tables:.3f} s; "
          f"matching + tables {t_match + t_tables:.2f} s ({len(rows)} rows)")
    print(f"follow-up labels resampled onto the baseline grid (full grid, for the NIfTI): {t_resample:.1f} s")
    if not args.no_peer:
        t = time.perf_counter()
        tx = peer_registration(base, fu)
        t_peer = time.perf_counter() - t
        pm, pp = errors(tx.TransformPoint, truth, pts)
        print(f"peer, full-image SimpleITK (MI, rigid -> affine -> B-spline): {t_peer:.1f} s; error in the liver "
              f"{pm:.2f} mm mean, {pp:.2f} mm p95")
        print(f"ratio peer / LiverPlan time: {t_peer / t_reg:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
