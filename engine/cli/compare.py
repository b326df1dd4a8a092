"""``liverplan compare``: a baseline and a follow-up scan of one patient: the follow-up registered onto the
baseline inside the liver, every lesion matched (or said new / vanished), the change table, RECIST 1.1
and a volumetric response (engine.compare)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline_ct", help="baseline CT (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("baseline_labels", help="baseline label map (or a folder of masks)")
    parser.add_argument("followup_ct", help="follow-up CT (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("followup_labels", help="follow-up label map (or a folder of masks)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="write comparison.json, comparison_lesions.csv and followup_labels_on_baseline.nii.gz "
                             "into DIR")
    parser.add_argument("--targets", metavar="IDS",
                        help="RECIST 1.1 target lesions by their baseline number, e.g. 1,3 (at most 2: all lie in "
                             "the liver; default: the two largest measurable)")
    parser.add_argument("--pair", metavar="B:F", action="append", default=[],
                        help="pair by hand: baseline lesion(s) B became follow-up lesion(s) F, e.g. 3:5 or 2,4:1 "
                             "(repeatable; follow-up numbers as in its own lesion table)")
    parser.add_argument("--labels-mapping", metavar="MAP",
                        help="JSON label mapping or a preset name (ircadb, totalsegmentator) for both label maps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _ids(text: str, what: str) -> list[int]:
    from engine.errors import InputError

    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise InputError(f"'{part}' is not a lesion number ({what}); lesions are numbered 1, 2, ... as in "
                             "the lesion table.")
        out.append(int(part))
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.cli.measure import load_case_with_labels
    from engine.cli.progressbar import TextProgress
    from engine.compare import Comparison
    from engine.errors import InputError

    out = Path(args.out).expanduser()
    if not args.overwrite:
        for n in ("comparison.json", "comparison_lesions.csv", "followup_labels_on_baseline.nii.gz"):
            if (out / n).exists():
                raise InputError(f"{out / n} already exists; nothing was written. Use --overwrite or another folder.")
    targets = _ids(args.targets, "--targets") if args.targets else None
    pairs = []
    for spec in args.pair:
        if ":" not in spec:
            raise InputError(f"--pair '{spec}' needs the form BASELINE:FOLLOWUP, e.g. 3:5.")
        b, f = spec.split(":", 1)
        pairs.append((_ids(b, "--pair"), _ids(f, "--pair")))
    base = load_case_with_labels(args.baseline_ct, args.baseline_labels, args.labels_mapping)
    fu = load_case_with_labels(args.followup_ct, args.followup_labels, args.labels_mapping)
    progress = (lambda *a: None) if args.no_progress else TextProgress()
    try:
        comp = Comparison(base, fu).run(progress=progress)
    finally:
        if hasattr(progress, "close"):
            progress.close()
    for b, f in pairs:
        comp.pair(b, f)
    if targets is not None:
        comp.set_targets(targets)
    print(f"Baseline {base.name}: {base.geometry.describe()}")
    print(f"Follow-up {fu.name}: {fu.geometry.describe()}")
    for w in base.provenance.warnings:
        print(f"Note (baseline): {w}")
    for w in fu.provenance.warnings:
        print(f"Note (follow-up): {w}")
    print(comp.summary_text())
    paths = comp.write(out, overwrite=args.overwrite)
    print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
