"""``liverplan report``: the tumour-board report (PDF, self-contained HTML, DICOM Encapsulated PDF) of a CT +
labels. Works without a display (the 3D views are drawn offscreen; see engine.board_report.offscreen_ready)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", help="CT file (NIfTI/NRRD/MHA) or DICOM folder (the DICOM tags give the patient "
                                   "and study in the report's header)")
    parser.add_argument("labels", help="label map (NIfTI/NRRD/MHA, 3D Slicer .seg.nrrd, or a folder of masks)")
    parser.add_argument("--out", metavar="DIR", required=True, help="folder receiving board_report.pdf/.html/.dcm")
    parser.add_argument("--format", default="pdf,html", metavar="LIST",
                        help="comma-separated formats among pdf, html, dcm (default pdf,html)")
    parser.add_argument("--reference", metavar="REF", help="a reference label map: adds an evaluation table")
    parser.add_argument("--anonymise", "--anonymize", action="store_true",
                        help="no patient name, ID, birth date, study date or file path in the report or its metadata")
    parser.add_argument("--reviewed-by", metavar="NAME", default="",
                        help="who reviewed the labels (empty: the report says 'not reviewed')")
    parser.add_argument("--language", choices=("en", "fr"), default=None,
                        help="the report's language (default: the LIVERPLAN_REPORT_LANGUAGE setting, else en)")
    parser.add_argument("--labels-mapping", metavar="MAP",
                        help="JSON label mapping or a preset name (ircadb, totalsegmentator) for foreign labels")
    parser.add_argument("--series", help="DICOM series key when the folder holds several series")
    parser.add_argument("--resect", metavar="SEGMENTS", action="append", default=[],
                        help="a resection scenario, e.g. 5,6,7,8 or 'right hepatectomy=5-8' (repeatable; default: "
                             "right and left hepatectomy when the segments can be estimated)")
    parser.add_argument("--height", metavar="CM", type=float, help="patient height (cm) for the standardised FLR")
    parser.add_argument("--weight", metavar="KG", type=float, help="patient weight (kg) for the standardised FLR")
    parser.add_argument("--window", metavar="LEVEL,WIDTH", default="80,180",
                        help="window of the key images in HU (default 80,180: the liver preset)")
    parser.add_argument("--comparison", metavar="COMPARISON_JSON",
                        help="the comparison.json of 'liverplan compare' whose follow-up is this CT: adds the section "
                             "'Change since the baseline scan' (RECIST 1.1, volumes, vanished lesions and whether each "
                             "scenario leaves their sites)")
    parser.add_argument("--no-3d", action="store_true", help="leave out the 3D views (faster)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from engine.board_report import (BoardOptions, apply_segmentation_record, build_report, parse_formats,
                                     segmentation_record_for, write_report)
    from engine.cli.measure import load_case_with_labels, measure_with_warnings
    from engine.errors import InputError

    formats = parse_formats(args.format)
    if (args.height is None) != (args.weight is None):
        raise InputError("The standardised FLR needs both --height (cm) and --weight (kg).")
    out = Path(args.out).expanduser()
    if not args.overwrite:
        there = [str(out / f"board_report.{f}") for f in formats if (out / f"board_report.{f}").exists()]
        if there:
            raise InputError(f"{', '.join(there)} already exist(s); nothing was written. Use --overwrite or "
                             "another folder.")
    try:
        level, width = (float(v) for v in args.window.split(","))
        if width <= 0:
            raise ValueError
    except ValueError:
        raise InputError(f"--window '{args.window}' must be LEVEL,WIDTH in HU with a positive width, e.g. 80,180.") \
            from None
    language = args.language or os.environ.get("LIVERPLAN_REPORT_LANGUAGE", "en")
    case = load_case_with_labels(args.ct, args.labels, args.labels_mapping, args.series)
    record = segmentation_record_for(args.labels)
    if record is not None:        # labels written by `segment`: the report names the model that made them
        apply_segmentation_record(case, record)
    comparison = None
    if args.comparison:          # refused (another scan's grid, not a comparison) before any work is done
        from engine.compare.report_section import read_comparison_for_report
        comparison = read_comparison_for_report(args.comparison, case.geometry)
    rep = measure_with_warnings(case)
    planner = None
    if args.resect or args.height:
        from engine.planning.planner import Planner
        from engine.planning.resection import Patient, Scenario, parse_segments

        from engine.cli.plan import _named
        planner = Planner(case.labels, case.geometry).run()
        planner.patient = Patient(args.height, args.weight)
        for spec in args.resect or ["right hepatectomy=5-8", "left hepatectomy=2-4"]:
            name, rest = _named(spec, "")
            segs = parse_segments(rest)
            planner.set_scenario(Scenario(name or "resect " + ",".join(str(s) for s in segs), segments=segs))
    evaluation = None
    if args.reference:
        from engine.io import read_label_map
        from engine.cli.measure import load_mapping
        from metrics.suite import evaluate_case

        ref = read_label_map(args.reference, case, load_mapping(args.labels_mapping))
        evaluation = evaluate_case(case.labels, ref, case.geometry.spacing,
                                   metrics=("dice", "hd95", "assd", "cldice"))
    report = build_report(case, BoardOptions(anonymise=args.anonymise, reviewed_by=args.reviewed_by,
                                             language=language, views_3d=not args.no_3d,
                                             window=(level, width)),
                          planner=planner, measurements=rep, evaluation=evaluation, comparison=comparison)
    paths = write_report(report, out, formats, overwrite=args.overwrite)
    for w in report.warnings:
        print(f"Note: {w}")
    print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
