"""Error regions + FP/FN counts after an edit on a 512 x 512 x 300 case: LiverPlan's incremental update
(engine.review.errors.ErrorMaps.update on the edited box, then the regions) against a naive full recompute
(every structure's masks and components from scratch), side by side; prints times and the ratio.

The case: the phantom (engine.phantom) rendered at 96 x 128 x 128 and enlarged (nearest neighbour) to
300 x 512 x 512 as the reference; the "labels" are that reference with model-like errors (the liver grown by
one voxel on one side, a lesion dropped, a blob added). Run: PYTHONPATH=$PWD .venv/bin/python
benchmarks/review_errors_speed.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from engine.phantom import make_phantom
from engine.review.errors import ErrorMaps, naive_error_regions
from engine.review.uncertainty import uncertain_regions


def big_case(shape=(300, 512, 512)):
    small = make_phantom(seed=1, shape=(96, 128, 128), n_lesions=4)
    zoom = [a / b for a, b in zip(shape, small.labels.shape)]
    ref = ndi.zoom(small.labels, zoom, order=0)
    spacing = tuple(s / z for s, z in zip(small.geometry.spacing, zoom))
    pred = ref.copy()
    liver = ref == 1
    grown = ndi.binary_dilation(liver[:, :, 256:], iterations=1)
    pred[:, :, 256:][grown & (ref[:, :, 256:] == 0)] = 1
    from metrics.lesions import label_lesions
    lab, n = label_lesions(ref == 5)
    if n:
        pred[lab == 1] = 1
    pred[40:60, 60:100, 60:100] = 1
    return pred, ref, spacing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--resample", action="store_true",
                    help="only time the uncertainty's cost in the logits -> labels resampling (6 classes, "
                         "logits 150 x 256 x 256 -> 300 x 512 x 512), with and without it")
    args = ap.parse_args()
    if args.resample:
        resample_cost(args.repeat)
        return
    t0 = time.perf_counter()
    pred, ref, spacing = big_case()
    print(f"case {pred.shape[::-1]} (x y z) built in {time.perf_counter() - t0:.1f} s; "
          f"{pred.size / 1e6:.1f} M voxels")
    t0 = time.perf_counter()
    maps = ErrorMaps(pred, ref, spacing)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    regions = maps.regions()
    t_regions = time.perf_counter() - t0
    print(f"first build: FP/FN maps {t_build:.2f} s, {len(regions)} regions {t_regions:.2f} s "
          f"(off the GUI thread in the window); maps memory {2 * pred.size / 1e6:.0f} MB (2 bytes/voxel)")
    inc, naive = [], []
    rng = np.random.default_rng(0)
    for _ in range(args.repeat):
        z, y, x = int(rng.integers(100, 200)), int(rng.integers(150, 350)), int(rng.integers(150, 350))
        box = (z, z + 10, y, y + 40, x, x + 40)                     # a brush stroke of ~2 cm over 10 slices
        pred[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = 5
        t0 = time.perf_counter()
        maps.update(box)
        counts = maps.counts()
        r_inc = maps.regions()
        inc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r_naive = naive_error_regions(pred, ref, spacing)
        naive.append(time.perf_counter() - t0)
        assert r_inc == r_naive, "incremental and full recompute differ"
        assert counts == ErrorMaps(pred, ref, spacing).counts()
    print(f"after an edit (10x40x40 box), counts + regions: incremental {min(inc):.3f} s (best of "
          f"{args.repeat}), naive full recompute {min(naive):.3f} s; ratio naive/incremental "
          f"{min(naive) / min(inc):.1f}x")
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        maps.update(box)
    t_counts = (time.perf_counter() - t0) / args.repeat
    print(f"counts only after an edit (what the overlay and legend need at once): {t_counts * 1000:.1f} ms")
    unc = np.zeros(pred.shape, np.uint8)
    edge = ndi.binary_dilation(pred == 1, iterations=1) & ~ndi.binary_erosion(pred == 1, iterations=1)
    unc[edge] = 110
    t0 = time.perf_counter()
    ur = uncertain_regions(unc)
    print(f"uncertain regions (a 3-voxel shell around the liver as the doubt): {len(ur)} in "
          f"{time.perf_counter() - t0:.2f} s; the map costs {unc.nbytes / 1e6:.1f} MB (1 byte/voxel)")


def resample_cost(repeat: int) -> None:
    import torch

    from engine.inference.resample import resample_logits_to_labels

    torch.manual_seed(0)
    logits = torch.randn(6, 150, 256, 256) * 3
    logits[0, :, :40] += 8                     # background ahead in a part of the volume, as in a CT
    out_shape = (300, 512, 512)
    plain, withu = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a = resample_logits_to_labels(logits, out_shape)
        plain.append(time.perf_counter() - t0)
        u = np.zeros(out_shape, np.uint8)
        t0 = time.perf_counter()
        b = resample_logits_to_labels(logits, out_shape, uncertainty_out=u)
        withu.append(time.perf_counter() - t0)
        assert np.array_equal(a, b)
    print(f"resample logits (6, 150, 256, 256) -> labels 300 x 512 x 512 on the CPU ({torch.get_num_threads()} "
          f"threads): labels only {min(plain):.2f} s, labels + uncertainty {min(withu):.2f} s (best of {repeat}); "
          f"+{min(withu) - min(plain):.2f} s, x{min(withu) / min(plain):.2f}; the map: {u.nbytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
