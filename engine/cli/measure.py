"""``liverplan measure``: volumes, total liver volume, tumour burden and the lesion table of a CT + labels."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", help="CT file (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("labels", help="label map (NIfTI/NRRD/MHA, 3D Slicer .seg.nrrd, or a folder of masks)")
    parser.add_argument("--csv", metavar="FILE", help="write the measurement table here (and the lesion "
                        "table beside it as FILE_lesions.csv)")
    parser.add_argument("--json", metavar="FILE", help="write the full report (with definitions) as JSON")
    parser.add_argument("--labels-mapping", metavar="MAP",
                        help="JSON label mapping or a preset name (ircadb, totalsegmentator) for foreign labels")
    parser.add_argument("--series", help="DICOM series key when the folder holds several series")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


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
    from engine.io import load_case, read_label_map

    case = load_case(ct, series=series)
    lab = read_label_map(labels, case, load_mapping(mapping_spec))
    case.set_labels(lab, label_source=f"file: {labels}")
    return case


def run(args: argparse.Namespace) -> int:
    from engine.measure import format_tables, measure
    from engine.report import write_measurements_csv, write_measurements_json

    case = load_case_with_labels(args.ct, args.labels, args.labels_mapping, args.series)
    report = measure(case)
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
