"""``liverplan phantom``: write synthetic portal-phase CT phantoms with five-structure label maps.

Layout of ``--out DIR`` (one case per seed, seeds SEED .. SEED+N-1):
  phantom_<seed>_ct.nii.gz       the CT in Hounsfield units (int16, LPS, spacing as asked)
  phantom_<seed>_labels.nii.gz   uint8 label map: 1 liver, 2 portal vein, 3 hepatic veins, 4 IVC, 5 CRLM
  phantom_<seed>_info.json       seed, geometry and the drawn lesions (centre LPS mm, diameter mm)
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the phantoms into (created if needed)")
    parser.add_argument("--n", type=int, default=1, help="number of phantoms (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first phantom (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(96, 128, 128),
                        help="voxels per axis, z y x (default 96 128 128)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size in mm, z y x (default: fit a 240 x 320 x 320 mm field of view)")
    parser.add_argument("--lesions", type=int, default=None,
                        help="lesions per phantom, 0-8 (default: drawn from each seed)")
    parser.add_argument("--version", type=int, choices=(1, 2), default=1, dest="phantom_version",
                        help="1 (default): the original phantoms; 2: the liver among neighbours of liver-like "
                             "density, varied liver shapes and lesion appearances (engine.phantom_v2)")
    parser.add_argument("--format", choices=("nii.gz", "nrrd", "mha"), default="nii.gz",
                        help="file format of CT and labels (default nii.gz)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from engine.errors import ExportError, InputError
    from engine.io import write_image, write_label_map
    from engine.io.atomic import write_text_atomic
    from engine.phantom import make_phantom
    from engine.phantom_v2 import make_phantom_v2

    if args.n < 1:
        raise InputError("--n must be at least 1.")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out must be a folder.")
    seeds = range(args.seed, args.seed + args.n)
    ext = args.format
    names = {s: (out / f"phantom_{s:03d}_ct.{ext}", out / f"phantom_{s:03d}_labels.{ext}",
                 out / f"phantom_{s:03d}_info.json") for s in seeds}
    if not args.overwrite:
        for paths in names.values():
            for p in paths:
                if p.exists():
                    raise ExportError(f"{p} already exists; use --overwrite or another --out folder.")
    for s in seeds:
        make = make_phantom_v2 if getattr(args, "phantom_version", 1) == 2 else make_phantom
        case = make(seed=s, shape=tuple(args.shape),
                            spacing=None if args.spacing is None else tuple(args.spacing),
                            n_lesions=args.lesions)
        ct_p, lab_p, info_p = names[s]
        write_image(ct_p, case, overwrite=args.overwrite)
        write_label_map(lab_p, case, overwrite=args.overwrite)
        info = {"seed": s, "ct": ct_p.name, "labels": lab_p.name, "geometry": case.geometry.to_dict(),
                "provenance": case.provenance.to_dict()}
        write_text_atomic(info_p, json.dumps(info, indent=2) + "\n", overwrite=args.overwrite)
        n_les = case.provenance.extra["n_lesions"]
        print(f"{ct_p.name} + {lab_p.name}: {case.geometry.describe()}, {n_les} lesion(s)")
        for w in case.provenance.warnings:
            print(f"  warning: {w}")
    print(f"Wrote {args.n} phantom(s) to {out}")
    return 0
