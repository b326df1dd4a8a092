"""``liverplan export``: a label map as masks (NIfTI/NRRD/.seg.nrrd), surfaces (STL/OBJ/VTP), measurements.

Files written into ``--out DIR`` (NAME = the CT file's name without extension, or ``--name``):
  NAME_labels.nii.gz | .nrrd | .seg.nrrd   label map in the CT's own (source) geometry
  NAME_<structure>_LPS.stl | .obj | .vtp   one surface per structure, patient coordinates in mm (LPS;
                                           ``--space RAS`` writes _RAS files instead)
  NAME_measurements.csv + NAME_measurements_lesions.csv, NAME_measurements.json
Nothing is written when any target exists, unless ``--overwrite``.
"""
from __future__ import annotations

import argparse

MASK_FORMATS = ("nii.gz", "nii", "nrrd", "seg.nrrd", "mha", "dcm")
MESH_FORMATS = ("stl", "obj", "vtp")
MEASUREMENT_FORMATS = ("csv", "json")


def _list(value: str, allowed, what: str) -> list[str]:
    from engine.errors import InputError

    items = [v.strip().lower().lstrip(".") for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise InputError(f"Unknown {what} format '{bad[0]}'; choose from {', '.join(allowed)}.")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", help="CT file (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("labels", help="label map (NIfTI/NRRD/MHA, .seg.nrrd, or a folder of masks)")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--mask", default=None, help="mask formats, comma-separated: " + ",".join(MASK_FORMATS))
    parser.add_argument("--mesh", default=None, help="mesh formats, comma-separated: " + ",".join(MESH_FORMATS))
    parser.add_argument("--measurements", default=None, help="measurement formats: csv,json")
    parser.add_argument("--space", choices=("LPS", "RAS"), default="LPS",
                        help="coordinate system of the mesh files (default LPS, as DICOM and 3D Slicer use)")
    parser.add_argument("--no-smooth", action="store_true",
                        help="unsmoothed meshes (within 0.35 mm of the voxel boundaries; corners cut, so thin "
                             "vessels come out 3-10 %% below their voxel volume)")
    parser.add_argument("--name", help="file name prefix (default: the CT's file name)")
    parser.add_argument("--labels-mapping", metavar="MAP", help="JSON label mapping or preset name")
    parser.add_argument("--series", help="DICOM series key when the folder holds several series")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.cli.measure import load_case_with_labels
    from engine.errors import ExportError

    if args.mask is None and args.mesh is None and args.measurements is None:
        masks, meshes, meas = ["nii.gz"], ["stl"], ["csv", "json"]
    else:
        masks = _list(args.mask, MASK_FORMATS, "mask") if args.mask else []
        meshes = _list(args.mesh, MESH_FORMATS, "mesh") if args.mesh else []
        meas = _list(args.measurements, MEASUREMENT_FORMATS, "measurement") if args.measurements else []
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out must be a folder.")

    case = load_case_with_labels(args.ct, args.labels, args.labels_mapping, args.series)
    if args.name is not None and (not args.name.strip() or any(c in args.name for c in "/\\\0")
                                  or args.name.startswith(".")):
        from engine.case import safe_file_stem
        raise ExportError(f"--name {args.name!r} is the start of the file names, not a path or a hidden name "
                          f"(e.g. {safe_file_stem(args.name)!r}); nothing was written.")
    name = args.name or case.file_stem
    from engine.labels import BY_LABEL
    from engine.mesh import mesh_file_name
    from engine.report import lesion_table_path

    present = [int(v) for v in sorted(set(int(x) for x in __import__("numpy").unique(case.labels)))
               if int(v) in BY_LABEL]
    targets = [out / f"{name}_labels.{f}" for f in masks]
    targets += [out / mesh_file_name(lab, f, args.space, prefix=f"{name}_") for lab in present for f in meshes]
    if "csv" in meas:
        targets += [out / f"{name}_measurements.csv", lesion_table_path(out / f"{name}_measurements.csv")]
    if "json" in meas:
        targets.append(out / f"{name}_measurements.json")
    # Source data is only ever read: no output may replace an input file or land in an input folder.
    from engine.cli.paths import out_in_folder, source_folder

    inputs = [Path(p).expanduser() for p in (args.ct, args.labels) if p]
    for src in inputs:
        folder = source_folder(src)          # a single DICOM file opens its whole series: its folder too
        where = out_in_folder(out, folder)
        if where:
            raise ExportError(f"--out {out} is {'' if where == 'is' else 'inside '}an input folder ({folder.name}); "
                              "source data is only ever read, and files added there would be read with it next "
                              "time. Choose another --out; nothing was written.")
        for t in targets:
            if src.is_file() and t.exists() and t.resolve() == src.resolve():
                raise ExportError(f"{t} is an input of this export; source data is only ever read, even with "
                                  "--overwrite. Choose another --out or --name; nothing was written.")
    if "dcm" in masks:
        from engine.io.dicomseg import dicom_seg_problem
        problem = dicom_seg_problem(case)
        if problem:
            raise ExportError(f"{problem} Nothing was written.")
    if not args.overwrite:
        for t in targets:
            if t.exists():
                raise ExportError(f"{t} already exists; nothing was written. Use --overwrite or another --out.")

    written: list[Path] = []
    try:
        _write_all(args, case, out, name, masks, meshes, meas, written)
    except (ExportError, KeyboardInterrupt) as exc:
        if written:
            # the files before the failure are whole (each write is atomic); say which they are
            done = ", ".join(p.name for p in written)
            if isinstance(exc, KeyboardInterrupt):
                print(f"Cancelled after {len(written)} of {len(targets)} file(s): {done}.")
                raise
            raise ExportError(f"{exc} {len(written)} of {len(targets)} file(s) had been written before: "
                              f"{done}.") from None
        raise
    for p in written:
        print(p)
    print(f"Exported {len(written)} file(s) to {out}")
    for w in case.provenance.warnings:          # the scan's and the labels' (merges, values left out)
        print(f"warning: {w}")
    return 0


def _write_all(args, case, out, name, masks, meshes, meas, written: list) -> None:
    """Write the requested files, appending each to ``written`` as soon as it is complete."""
    if masks:
        from engine.io import write_label_map

        for f in masks:
            written.append(write_label_map(out / f"{name}_labels.{f}", case, overwrite=args.overwrite))
    if meshes:
        from engine.mesh import label_surfaces, write_meshes

        surfaces = label_surfaces(case.labels, case.geometry, smooth=not args.no_smooth)
        write_meshes(surfaces, out, meshes, space=args.space, prefix=f"{name}_", overwrite=args.overwrite,
                     written=written)
    if meas:
        from engine.cli.measure import measure_with_warnings
        from engine.report import write_measurements_csv, write_measurements_json

        report = measure_with_warnings(case)
        if "csv" in meas:
            written += write_measurements_csv(out / f"{name}_measurements.csv", report, overwrite=args.overwrite)
        if "json" in meas:
            written.append(write_measurements_json(out / f"{name}_measurements.json", report,
                                                   overwrite=args.overwrite))
