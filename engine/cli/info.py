"""``liverplan info PATH``: what is in a CT file, label map or DICOM folder.

Folder: the table of series (modality, description, slices, size, spacing, thickness, acquisition time,
contrast-phase guess) and which one LiverPlan would open. File: its geometry (size, spacing, orientation,
origin), value range and a modality guess; for a label map its label values with voxel counts.
"""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("path", help="a CT/label-map file (.nii.gz, .nii, .nrrd, .seg.nrrd, .mha, .dcm) or a "
                                     "DICOM folder (searched recursively)")
    parser.add_argument("--series", help="for a folder: the series to describe as chosen (number or key)")
    parser.add_argument("--mapping", help="label mapping for a label map or mask folder: a preset "
                                          "(totalsegmentator, ircadb, identity) or a JSON file")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def _xyz(v, fmt="{:.4g}") -> str:
    return " x ".join(fmt.format(float(x)) for x in v)


def _print_geometry(g: dict) -> None:
    print(f"  size:        {_xyz(g['size_xyz'], '{:.0f}')} voxels (x, y, z)")
    print(f"  spacing:     {_xyz(g['spacing_xyz_mm'])} mm (x, y, z)")
    print(f"  orientation: {g['orientation']}{' (oblique)' if g['oblique'] else ''}")
    print(f"  origin:      ({', '.join(f'{v:.2f}' for v in g['origin_lps_mm'])}) mm, LPS")


def _print_folder(d: dict) -> None:
    from engine.io.dicom import PHASE_TEXT

    series = d["series"]
    print(f"DICOM folder {d['path']}: {len(series)} series")
    head = f"{'':2}{'#':>2}  {'modality':<8} {'description':<28} {'slices':>6}  {'size x,y,z':<13} " \
           f"{'spacing x,y,z mm':<20} {'thick':>5}  {'time':<8}  phase"
    print(head)
    for i, s in enumerate(series, 1):
        mark = "*" if d.get("picked") == s["key"] else " "
        size = "x".join(str(v) for v in s["size_xyz"]) if s["size_xyz"] else "-"
        sp = "x".join(f"{v:.3g}" for v in s["spacing_zyx_mm"][::-1]) if s["spacing_zyx_mm"] else "-"
        th = f"{s['slice_thickness_mm']:.3g}" if s["slice_thickness_mm"] else "-"
        desc = (s["description"] or "(none)")[:28]
        print(f"{mark:2}{i:>2}  {s['modality'] or '?':<8} {desc:<28} {s['n_slices']:>6}  {size:<13} {sp:<20} "
              f"{th:>5}  {s['acquisition_time'] or '-':<8}  {PHASE_TEXT.get(s['phase_guess'], s['phase_guess'])}")
        print(f"{'':6}key {s['key']}; phase: {s['phase_reason']}")
        if s["problem"]:
            print(f"{'':6}cannot open: {s['problem']}")
        for w in s["warnings"]:
            print(f"{'':6}warning: {w}")
    print(f"-> {d['verdict']}")


def run(args) -> int:
    from engine.io.describe import describe_path

    mapping = None
    if getattr(args, "mapping", None):
        from engine.labelmap import LabelMapping
        mapping = LabelMapping.load(args.mapping)
    wanted = getattr(args, "series", None)
    d = describe_path(args.path, wanted, mapping)
    # a --series that names no series is an error (exit 2), as it is for the commands that open the CT
    rc = 2 if wanted and d.get("kind") == "dicom-folder" and d.get("picked") is None else 0
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return rc
    kind = d["kind"]
    if kind == "dicom-folder":
        _print_folder(d)
    elif kind == "dicom-file":
        this = next(s for s in d["series"] if s["key"] == d["this_series"])
        print(f"DICOM file {d['path']}: {this['kind']}, modality {this['modality'] or 'not stated'}")
        _print_folder({"path": str(d["path"]) + " (and the files beside it)", "series": d["series"],
                       "picked": d["this_series"] if not this["problem"] else None, "verdict": d["verdict"]})
    elif kind in ("mask-folder", "image-folder"):
        what = "Folder of masks" if kind == "mask-folder" else "Folder of image files"
        print(f"{what} {d['path']} (mapping: {d['mapping']})")
        print(f"  {'file':<32} {'voxels':>10} {'mL':>9}  LiverPlan structure")
        for e in d["files"]:
            print(f"  {e['file'][:32]:<32} {e['voxels']:>10} {e['volume_ml']:>9.1f}  "
                  f"{e['liverplan_structure'] or '- (ignored)'}")
        for n in d["notes"]:
            print(f"  note: {n}")
        print(f"-> {d['verdict']}")
    elif kind == "dicom-seg":
        print(f"DICOM SEG {d['path']} ({d['description'] or 'no description'})")
        print(f"  refers to CT series {d['referenced_series_uid'] or '(not stated)'}")
        print(f"  {'#':>3} {'segment':<28} {'frames':>6}  {'made':<13} LiverPlan structure")
        for s in d["segments"]:
            print(f"  {s['number']:>3} {s['name'][:28]:<28} {s['frames']:>6}  {s['algorithm_type'] or '-':<13} "
                  f"{s['liverplan_structure'] or '-'}")
        print(f"-> {d['verdict']}")
    elif kind == "segmentation":
        print(f"3D Slicer segmentation {d['path']} ({d['layers']} layer(s))")
        _print_geometry(d["geometry"])
        print(f"  {'segment':<24} {'layer':>5} {'value':>5} {'voxels':>10} {'mL':>9}  LiverPlan structure")
        for s in d["segments"]:
            print(f"  {s['name'][:24]:<24} {s['layer']:>5} {s['label_value']:>5} {s['voxels']:>10} "
                  f"{s['volume_ml']:>9.1f}  {s['liverplan_structure'] or '-'}")
        print(f"-> {d['verdict']}")
    else:
        what = "label map" if kind == "label-map" else "image"
        via = f", mapping {d['mapping']}" if d.get("mapping") else ""
        print(f"{what} {d['path']} ({d['format']}, {d['pixel_type']}{via})")
        if "geometry" in d:
            _print_geometry(d["geometry"])
            lo, hi = d["value_range"]
            print(f"  values:      {lo:g} .. {hi:g}")
            print(f"  looks like:  {d['modality_guess']}")
        for w in d.get("warnings", []):
            print(f"  warning:     {w}")
        if kind == "label-map":
            print(f"  {'value':>5} {'voxels':>10} {'mL':>9}  LiverPlan structure")
            for lab in d["labels"]:
                print(f"  {lab['value']:>5} {lab['voxels']:>10} {lab['volume_ml']:>9.1f}  "
                      f"{lab['liverplan_structure'] or '-'}")
        print(f"-> {d['verdict']}")
    return rc
