"""``liverplan measure``: volumes, total liver volume, tumour burden and the lesion table of a CT + labels."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", help="CT file (NIfTI/NRRD/MHA) or DICOM folder; with --cluster: a folder of CTs or a "
                                   "cohort file (CSV/JSON, as for train --cohort)")
    parser.add_argument("labels", nargs="?",
                        help="label map (NIfTI/NRRD/MHA, 3D Slicer .seg.nrrd, or a folder of masks); with --cluster: "
                             "a folder of label maps matched to the CTs by case name (not needed with a cohort file)")
    parser.add_argument("--csv", metavar="FILE", help="write the measurement table here (and the lesion "
                        "table beside it as FILE_lesions.csv)")
    parser.add_argument("--json", metavar="FILE", help="write the full report (with definitions) as JSON")
    parser.add_argument("--labels-mapping", metavar="MAP",
                        help="JSON label mapping or a preset name (ircadb, totalsegmentator) for foreign labels")
    parser.add_argument("--series", help="DICOM series key when the folder holds several series")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    # issue 21: a cohort on Dask
    parser.add_argument("--out", metavar="DIR", help="with --cluster: the folder receiving each case's tables")
    from engine.cli.cluster import add_arguments as add_cluster_arguments
    add_cluster_arguments(parser)


def load_mapping(spec):
    """A LabelMapping from a preset name or a JSON file path (None when not given)."""
    if not spec:
        return None
    from pathlib import Path

    from engine.labelmap import LabelMapping

    if Path(spec).expanduser().exists():
        return LabelMapping.load(Path(spec).expanduser())
    return LabelMapping.preset(spec)


def load_case_with_labels(ct: str, labels: str, mapping_spec=None, series=None):
    """The CT with its labels; what the label file merges or leaves out (IRCADb's venous mask, values the
    mapping does not cover) joins the scan's own warnings in the case's provenance."""
    from engine.io import load_case, read_label_map

    case = load_case(ct, series=series)
    notes: list[str] = []
    lab = read_label_map(labels, case, load_mapping(mapping_spec), notes=notes)
    case.set_labels(lab, label_source=f"file: {labels}")
    case.provenance.warnings.extend(n for n in notes if n not in case.provenance.warnings)
    return case


def measure_with_warnings(case):
    """``engine.measure.measure(case)`` with the case's warnings (the scan's and its labels') first among
    the report's, so that the printed tables and the CSV/JSON carry them."""
    from engine.measure import measure

    report = measure(case)
    report.warnings[:0] = [w for w in case.provenance.warnings if w not in report.warnings]
    return report


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.errors import ExportError
    from engine.measure import format_tables
    from engine.report import lesion_table_path, write_measurements_csv, write_measurements_json

    if args.cluster or args.resume or args.out:      # issue 21: a cohort on Dask, one task per case
        from engine.cli.cluster import run_on_cluster
        return run_on_cluster("measure", args)
    if not args.labels:
        from engine.errors import InputError
        raise InputError("measure needs the CT and its label map: liverplan measure CT LABELS.")
    if not args.overwrite:
        # all targets first, so that a refused run writes none of them
        wanted = ([Path(args.csv), lesion_table_path(Path(args.csv))] if args.csv else []) \
            + ([Path(args.json)] if args.json else [])
        for t in wanted:
            if t.expanduser().exists():
                raise ExportError(f"{t} already exists; nothing was written. Use --overwrite or another name.")
    case = load_case_with_labels(args.ct, args.labels, args.labels_mapping, args.series)
    report = measure_with_warnings(case)
    print(f"{case.name}: {case.geometry.describe()}")
    print(format_tables(report))
    print("")
    print("Total liver volume: " + report.definitions["total_liver_volume"])
    if args.csv:
        paths = write_measurements_csv(args.csv, report, overwrite=args.overwrite)
        print("Wrote " + ", ".join(str(p) for p in paths))
    if args.json:
        print(f"Wrote {write_measurements_json(args.json, report, overwrite=args.overwrite)}")
    return 0
