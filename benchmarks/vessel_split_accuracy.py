"""Accuracy of the portal/hepatic vessel split (engine.vessel_split): phantoms and IRCADb 1.17.

Phantoms (truth by construction; seeds 0-5 by default, 256 x 256 x 160 voxels of 1.25 x 1.25 x 2 mm) and the
real IRCADb 1.17 case (its 'portalvein' and 'venoussystem' masks; needs ../shared/data/real) are turned into
what a public model set gives: the portal and hepatic veins inside the liver's filled outline merged into one
vessel mask, the extrahepatic portal trunk and the IVC as seeds (tests/engine/vessel_problems.py). Prints, per
case and pooled over the phantoms, the share of vessel voxels assigned right, wrong (the other system) and
left unassigned, with the portal trunk given and without it (the hilum found instead), and with the vessel
mask broken in 40 places (6 mm gaps in branches of <= 2 mm radius, as model outputs break), with and
without the gap bridging.

    .venv/bin/python benchmarks/vessel_split_accuracy.py [--seeds 0 1 2 3 4 5] [--no-ircadb]
        [--shape 160 256 256] [--spacing 2 1.25 1.25]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--no-ircadb", action="store_true")
    ap.add_argument("--shape", type=int, nargs=3, default=[160, 256, 256], help="phantom voxels (z, y, x)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[2.0, 1.25, 1.25], help="phantom voxel size (z, y, x) mm")
    args = ap.parse_args()

    from engine.labels import Label
    from engine.phantom import make_phantom
    from engine.vessel_split import assign_vessel_tree
    import engine.vessel_split as vs
    from vessel_problems import accuracy, phantom_problem, with_gaps

    def no_trunk(labels):
        out = labels.copy()
        out[out == Label.PORTAL_VEIN] = Label.BACKGROUND
        return out

    def broken(labels, vessels, spacing):
        v = with_gaps(vessels, spacing)
        lab = labels.copy()
        lab[vessels & ~v] = Label.PARENCHYMA
        return lab, v

    def run(name, labels, vessels, truth, spacing, pooled):
        bl, bv = broken(labels, vessels, spacing)
        for variant, lab, ves, bridge in (("trunk", labels, vessels, vs.BRIDGE_MM),
                                          ("hilum", no_trunk(labels), vessels, vs.BRIDGE_MM),
                                          ("gaps", bl, bv, vs.BRIDGE_MM), ("gaps, no bridging", bl, bv, 0.0)):
            t = time.perf_counter()
            keep, vs.BRIDGE_MM = vs.BRIDGE_MM, bridge
            try:
                res = assign_vessel_tree(lab, ves, spacing)
            finally:
                vs.BRIDGE_MM = keep
            a = accuracy(res.labels, ves, truth)
            print(f"{name:12s} {variant:17s} right {a['right']:6.1%}  wrong {a['wrong']:5.1%}  unassigned "
                  f"{a['unassigned']:5.1%}  ({int(a['voxels'])} voxels, {time.perf_counter() - t:.1f} s)")
            if pooled is not None:
                p = pooled.setdefault(variant, [0.0, 0.0, 0.0, 0.0])
                for i, k in enumerate(("right", "wrong", "unassigned")):
                    p[i] += a[k] * a["voxels"]
                p[3] += a["voxels"]

    pooled: dict = {}
    for seed in args.seeds:
        case = make_phantom(seed=seed, shape=tuple(args.shape), spacing=tuple(args.spacing), n_lesions=0)
        run(f"phantom {seed}", *phantom_problem(case.labels, case.geometry.spacing), case.geometry.spacing, pooled)
    for variant, (r, w, u, n) in pooled.items():
        print(f"phantoms pooled ({variant}): right {r / n:.1%}, wrong {w / n:.1%}, unassigned {u / n:.1%}")
    if not args.no_ircadb:
        masks = REPO.parent / "shared" / "data" / "real" / "3dircadb1.17" / "masks"
        if not masks.is_dir():
            print(f"IRCADb 1.17 not found at {masks}: skipped")
            return 0
        from engine.evaluation import _geometry_of
        from engine.io import read_label_map
        from engine.labelmap import LabelMapping
        geom = _geometry_of(masks / "liver.nii.gz")
        ref = read_label_map(masks, geom, LabelMapping.preset("ircadb"))
        run("IRCADb 1.17", *phantom_problem(ref, geom.spacing, hepatic_outside=Label.IVC), geom.spacing, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
