"""Speed of the semi-automatic correction tools (engine.review) on a 512 x 512 x 300 case, with the peers
where one exists.

The case is a phantom (engine.phantom, seed 0) sampled on 512 x 512 x 300 voxels of 0.8 x 0.8 x 1.0 mm with
a spill of the liver label joined to the liver by a thin bridge (engine.review.spill_phantom). Each tool is
timed as the window runs it: the proposal (what the worker thread computes) and its application as one
undo step of a CaseSession (journal off: it is the same for every step). The phantom's construction is not
timed. Goals from issue 18: < 1 s per local operation, < 3 s for the grow-from-seeds preview over the whole
liver.

Peers on the same input:
- grow from seeds: the same seeds grown by skimage.segmentation.random_walker (mode cg_j) and by SimpleITK's
  MorphologicalWatershedFromMarkers, both on the same coarse grid as the preview (a whole-liver box at full
  resolution takes the random walker minutes and gigabytes);
- margin: scipy.ndimage.distance_transform_edt (the same distance) beside the SimpleITK
  SignedMaurerDistanceMap the margin uses to grow, on the same box.
Split, scissors and interpolation have no peer here (ITK's MorphologicalContourInterpolator is not in the
SimpleITK wheel).

    nice -n 5 .venv/bin/python benchmarks/review_tools_speed.py [--shape 300 512 512] [--repeat 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _t(fn, *args, repeat=1, **kwargs):
    best, out = None, None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return out, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), help="z y x voxels")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool (the best is printed)")
    ap.add_argument("--threads", type=int, default=2, help="numeric library threads (default 2)")
    ap.add_argument("--no-peers", action="store_true", help="skip the peers (the random walker takes minutes)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    from engine.case_session import CaseSession
    from engine.labels import Label
    from engine.phantom import make_phantom
    from engine.review import apply_proposal
    from engine.review.grow import BACKGROUND_SEED, SeedStrokes, grow, grow_region, grow_values
    from engine.review.interpolate import propose_interpolation
    from engine.review.margin import propose_margin
    from engine.review.scissors import propose_cut
    from engine.review.spill_phantom import add_neck_spill, spill_centre
    from engine.review.split import block_mean, coarse_factors, propose_split

    shape = tuple(args.shape)
    sp = (1.0 * 300 / shape[0], 0.8 * 512 / shape[1], 0.8 * 512 / shape[2])
    t0 = time.perf_counter()
    base = make_phantom(seed=0, shape=shape, spacing=sp, n_lesions=2)
    case, ball = add_neck_spill(base)
    cz, cy, cx = spill_centre(case)
    liver_vox = int(np.count_nonzero(case.labels == Label.PARENCHYMA))
    print(f"phantom seed 0 with a spill, {shape[::-1]} voxels (x, y, z), spacing (z, y, x) {sp} mm, "
          f"{liver_vox} liver voxels, spill {int(ball.sum())} voxels: built in {time.perf_counter() - t0:.1f} s; "
          f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    s = CaseSession(journal=False)
    s.open_case(case)
    lab = s.case.labels
    rows = []

    def step(name, kind, propose, *a, **kw):
        p, tp = _t(propose, *a, repeat=args.repeat, **kw)
        t = time.perf_counter()
        e = s.apply(kind, name, apply_proposal, p)
        ta = time.perf_counter() - t
        n = 0 if p is None else p.changed_voxels
        rows.append((name, tp, ta, n))
        print(f"{name:<44} propose {tp:6.2f} s  apply {ta:5.2f} s  total {tp + ta:6.2f} s  "
              f"({n} voxels changed)")
        if e is not None:
            s.undo()
        return p

    # --- split at the neck: the whole liver is the component
    p = step("split at neck (click on the spill)", "split", propose_split, lab, (cz, cy, cx), sp)
    if p is not None:
        print(f"    neck radius {p.info['neck_radius_mm']:.1f} mm; spill {int(ball.sum())} voxels")
    # --- scissors through all slices and through a 60 mm slab
    r = 25.0
    poly = [(cy - (r + 5) / sp[1], cx - (r + 7) / sp[2]), (cy - (r + 5) / sp[1], cx + (r + 5) / sp[2]),
            (cy + (r + 5) / sp[1], cx + (r + 5) / sp[2]), (cy + (r + 5) / sp[1], cx - (r + 7) / sp[2])]
    step("scissors, inside, all slices", "scissors", propose_cut, lab, 1, 0, cz, poly, sp, inside=True, slab_mm=0)
    step("scissors, outside, 60 mm slab (liver)", "scissors", propose_cut, lab, 1, 0, cz, poly, sp,
         inside=False, slab_mm=60)
    # --- interpolation: a 40 mm ball drawn on 3 axial slices 10 mm apart (label 6, unused by the phantom)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    c = (cz, cy, int(cx - 60 / sp[2]))
    for k in (-10, 0, 10):
        zz = c[0] + int(round(k / sp[0]))
        disc = ((y - c[1]) * sp[1]) ** 2 + ((x - c[2]) * sp[2]) ** 2 <= 20.0 ** 2 - (k ** 2)
        lab[zz][disc[0]] = 6
    s.history.reset(lab, s.history.base_meta)
    step("interpolate 3 slices of a 40 mm ball", "interpolate", propose_interpolation, lab, 6, 0, sp)
    lab[lab == 6] = 0
    s.history.reset(lab, s.history.base_meta)
    # --- margin: one lesion + 10 mm, the whole liver + 5 mm
    les = np.argwhere(lab == Label.CRLM)
    seed = tuple(int(v) for v in les[len(les) // 2]) if len(les) else None
    if seed is not None:
        step("margin +10 mm of one lesion (click)", "margin", propose_margin, lab, 5, 10.0, sp, seed_zyx=seed,
             rule="liver")
    step("margin +5 mm of the whole liver", "margin", propose_margin, lab, 1, 5.0, sp, rule="background")
    # --- grow from seeds over the whole liver: preview (coarse) and Apply (refined)
    seeds = SeedStrokes(shape)
    liver = np.argwhere(base.labels[cz] == Label.PARENCHYMA)
    ly, lx = (int(v) for v in liver[len(liver) // 2])
    seeds.add(1, (cz, cz + 1, ly, ly + 1, lx - 10, lx + 11), np.ones((1, 1, 21), bool))
    seeds.add(BACKGROUND_SEED, (cz, cz + 1, cy, cy + 1, cx - 10, cx + 11), np.ones((1, 1, 21), bool))
    res, tprev = _t(grow_region, lab, case.image, seeds, sp, where="liver", refine=False, repeat=args.repeat)
    box_vox = int(np.prod([res.box[2 * a + 1] - res.box[2 * a] for a in range(3)]))
    print(f"{'grow preview, whole liver (coarse)':<44} {tprev:6.2f} s  box {box_vox} voxels, blocks {res.factors}"
          f"  {res.seconds}")
    rows.append(("grow preview, whole liver", tprev, 0.0, box_vox))

    def grow_apply():
        t = time.perf_counter()
        r2 = grow_region(lab, case.image, seeds, sp, where="liver", refine=True)
        t1 = time.perf_counter()
        p2 = grow_values(lab, r2)
        print(f"    grow {t1 - t:.2f} s {({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r2.seconds.items()})}, "
              f"changes {time.perf_counter() - t1:.2f} s")
        return p2
    p = step("grow from seeds Apply, whole liver (refined)", "grow_from_seeds", grow_apply)
    if p is not None:
        lab2 = lab.copy()
        apply_proposal(lab2, p)
        removed = int(np.count_nonzero((lab != 0) & (lab2 == 0) & ball))
        rod = (lab != 0) & (base.labels == 0) & ~ball
        edge = (lab2 != lab) & ~ball & ~rod
        print(f"    spill voxels taken away: {removed} of {int(ball.sum())}; bridge voxels changed "
              f"{int(np.count_nonzero((lab2 != lab) & rod))} of {int(rod.sum())}; other voxels changed (the liver's "
              f"edge): {int(edge.sum())} ({edge.sum() / liver_vox:.2%} of the liver's voxels)")

    if not args.no_peers:
        from skimage.segmentation import random_walker
        import SimpleITK as sitk
        from scipy import ndimage

        sl = tuple(slice(res.box[2 * a], res.box[2 * a + 1]) for a in range(3))
        img = case.image[sl]
        marks = seeds.rasterize(res.box)
        from engine.review.grow import _anchor_border
        _anchor_border(marks, lab[sl], [1], res.box, shape)
        f = coarse_factors(img.shape, sp, 1_200_000)
        cimg = block_mean(img, f)
        cm = np.zeros(cimg.shape, np.uint8)
        best = np.zeros(cimg.shape, np.float32)
        for v in np.unique(marks[marks > 0]):
            frac = block_mean(marks == v, f)
            take = frac > best
            cm[take], best[take] = v, frac[take]
        csp = tuple(a * b for a, b in zip(sp, f))
        _, t_ours = _t(grow, cimg, cm, csp, refine=False, repeat=args.repeat)
        print(f"\npeers on the preview's coarse grid {cimg.shape} ({cimg.size} voxels):")
        print(f"  ours (skimage watershed on the gradient)      {t_ours:7.2f} s")
        from engine.review.grow import _gradient
        g = _gradient(cimg, csp)
        _, t_itk = _t(lambda: sitk.MorphologicalWatershedFromMarkers(
            sitk.GetImageFromArray(g), sitk.GetImageFromArray(cm.astype(np.uint16)), markWatershedLine=False,
            fullyConnected=False))
        print(f"  SimpleITK MorphologicalWatershedFromMarkers  {t_itk:7.2f} s  (ratio peer/ours {t_itk / t_ours:.1f})")
        rw_labels = np.zeros(cm.shape, np.int32)
        vals = sorted(int(v) for v in np.unique(cm[cm > 0]))
        for i, v in enumerate(vals, 1):
            rw_labels[cm == v] = i
        data = (cimg - cimg.mean()) / (cimg.std() + 1e-6)
        rw, t_rw = _t(random_walker, data, rw_labels, beta=130, mode="cg_j", tol=1e-3)
        ours_c = grow(cimg, cm, csp, refine=False)[0]
        agree = float(np.mean(np.asarray(vals, np.uint8)[rw - 1] == ours_c))
        print(f"  skimage random_walker (cg_j)                  {t_rw:7.2f} s  (ratio peer/ours {t_rw / t_ours:.1f}); "
              f"voxels labelled alike: {agree:.1%}")
        lsl = tuple(slice(max(b - 8, 0), e + 8) for b, e in zip(*[[int(v) for v in np.argwhere(lab == 1).min(0)],
                                                                   [int(v) + 1 for v in np.argwhere(lab == 1).max(0)]]))
        m = lab[lsl] == 1
        _, t_scipy = _t(ndimage.distance_transform_edt, ~m, sampling=sp)
        im = sitk.GetImageFromArray(m.astype(np.uint8))
        im.SetSpacing(tuple(reversed(sp)))
        _, t_maurer = _t(sitk.SignedMaurerDistanceMap, im, insideIsPositive=False, squaredDistance=False,
                         useImageSpacing=True)
        print(f"\nmargin's distance map on the liver's box {m.shape} ({m.size} voxels):")
        print(f"  SimpleITK SignedMaurerDistanceMap (ours, grow) {t_maurer:7.2f} s")
        print(f"  scipy distance_transform_edt                   {t_scipy:7.2f} s  (ratio peer/ours {t_scipy / t_maurer:.1f})")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
