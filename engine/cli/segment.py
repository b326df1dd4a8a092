"""``liverplan segment INPUT --model M --out DIR``: segment CTs with a local nnU-Net v2 model.

INPUT is a CT file (NIfTI/NRRD/MHA), a DICOM folder, or a folder of CT files (batch: the model is
loaded once). For each case DIR receives ``<case>_seg.nii.gz`` (the label map in the source geometry),
``<case>_measurements.csv`` (+ lesion table), ``<case>_measurements.json`` and
``<case>_segmentation.json`` (provenance: model card, mode, device, warnings, timings).
"""
from __future__ import annotations

import argparse

CT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CT file, DICOM folder, or a folder of CT files (batch)")
    parser.add_argument("--model", default="demo",
                        help="model folder, installed model name, a model set such as \"TotalSegmentator liver "
                             "set\", or 'demo' (default: the bundled demo model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--mode", default="fast", choices=("fast", "accurate"),
                        help="fast: one fold, no mirroring; accurate: all folds with mirroring (default fast)")
    parser.add_argument("--label-map", help="JSON file or preset (e.g. totalsegmentator, msd) mapping the model's "
                                            "labels to LiverPlan structures; it adds to matching by name")
    parser.add_argument("--extra-model", action="append", default=[],
                        help="another model whose labels are combined with the first (lesions > vessels > "
                             "parenchyma; later model wins ties); may be repeated")
    parser.add_argument("--extra-label-map", action="append", default=[], metavar="JSON",
                        help="label map of an --extra-model, given in the same order (the first applies to the "
                             "first --extra-model, ...); 'none' skips one that needs no map")
    parser.add_argument("--format", default=".nii.gz",
                        choices=(".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".dcm"),
                        help="label map file format (default .nii.gz; .dcm: a DICOM SEG referencing the CT's "
                             "own DICOM images, for a CT read from DICOM)")
    parser.add_argument("--series", help="DICOM series key when a folder holds several candidate series")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    liver = parser.add_mutually_exclusive_group()
    liver.add_argument("--liver-crop", dest="liver_crop", action="store_true", default=None,
                       help="accurate mode in two stages: a fast pass over the whole CT finds the liver, then the "
                            "accurate pass runs on the liver region (+ --liver-crop-margin) only; the fast pass's "
                            "result is kept outside it (default in accurate mode)")
    liver.add_argument("--no-liver-crop", dest="liver_crop", action="store_false",
                       help="accurate mode over the whole CT in one pass (nnU-Net's own sweep)")
    parser.add_argument("--liver-crop-margin", type=float, default=20.0, metavar="MM",
                        help="margin around the liver region found by the first pass, in mm (default 20)")
    parser.add_argument("--preprocessing", default="torch", choices=("torch", "nnunet"),
                        help="torch (default): nnU-Net's CT preprocessing computed with torch (same numbers, "
                             "faster, interruptible); nnunet: nnU-Net's own run_case_npy")
    bf16 = parser.add_mutually_exclusive_group()
    bf16.add_argument("--cpu-bf16", dest="cpu_bf16", action="store_true", default=None,
                      help="on the CPU, run the network under bfloat16 autocast (~1.2x faster, but it changes "
                           "fine structures; default: float32, nnU-Net's precision)")
    bf16.add_argument("--no-cpu-bf16", dest="cpu_bf16", action="store_false",
                      help="on the CPU, run the network in float32 (the default)")
    parser.add_argument("--all-tiles", action="store_true",
                        help="predict every sliding-window tile, also those holding only air (default: skipped)")
    crop = parser.add_mutually_exclusive_group()
    crop.add_argument("--body-crop", dest="body_crop", action="store_true",
                      help="crop the CT to the body before nnU-Net's preprocessing (faster preprocessing; the "
                           "tiles then differ from nnU-Net's sweep)")
    crop.add_argument("--no-body-crop", dest="body_crop", action="store_false",
                      help="(default) nnU-Net's full tile grid, tiles holding no body skipped: every body voxel "
                           "gets exactly nnU-Net's prediction")
    parser.set_defaults(body_crop=False)
    parser.add_argument("--no-postprocess", action="store_true", help="keep the model's raw output")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <case>_uncertainty.nii.gz: the model's per-voxel doubt, "
                             "round(255 x (1 - max softmax probability)), uint8 on the CT's grid (one model only; "
                             "a model set has none)")
    parser.add_argument("--no-vessel-split", action="store_true",
                        help="leave vessels a model gives without the portal/hepatic split as 'vessel, unassigned'")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from engine.cli.cluster import add_arguments as add_cluster_arguments   # issue 21: --cluster, --resume
    add_cluster_arguments(parser)


def _check_writable(out) -> None:
    """Refuse, before any model runs, an output folder that cannot be created or written."""
    import tempfile

    from engine.errors import ExportError

    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; it must be a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ExportError(f"Cannot write in the output folder {out}: {exc.strerror or exc} (a read-only or "
                          "protected folder, or a full disk?); nothing was run.") from None


def _inputs(path):
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(CT_SUFFIXES))
        if files:
            return files
    return [p]


def _case_name(path, case) -> str:
    from engine.case import safe_file_stem

    return safe_file_stem(case.name or path.name)


def option_fields(args) -> dict:
    """The engine.inference.SegmentOptions fields this command's flags set, besides mode, device and threads
    (the serial run and the cluster's jobs use the same)."""
    return dict(liver_crop=args.liver_crop, liver_crop_margin_mm=args.liver_crop_margin, crop_to_body=args.body_crop,
                preprocessing=args.preprocessing, cpu_bf16=args.cpu_bf16, skip_empty_tiles=not args.all_tiles,
                postprocess=not args.no_postprocess, split_vessels=not args.no_vessel_split,
                # only when asked (the runs' recorded settings stay as they were without it)
                **({"uncertainty": True} if getattr(args, "uncertainty", False) else {}))


def run(args: argparse.Namespace) -> int:
    if args.cluster or args.resume:                 # issue 21: a cohort on Dask, one task per case
        from engine.cli.cluster import run_on_cluster
        return run_on_cluster("segment", args)
    import math
    import sys
    from pathlib import Path

    from engine.errors import InputError, LiverPlanError
    from engine.models import find_model

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be 1 or more (got {args.threads}); leave it out to use every core.")
    if not math.isfinite(args.liver_crop_margin) or args.liver_crop_margin < 0:
        raise InputError(f"--liver-crop-margin must be a number of millimetres, 0 or more (got "
                         f"{args.liver_crop_margin}).")
    if len(args.extra_label_map) > len(args.extra_model):
        raise InputError(f"{len(args.extra_label_map)} --extra-label-map given for {len(args.extra_model)} "
                         "--extra-model: each label map goes with the --extra-model in the same position.")
    from engine.inference import ModelSetChoice, SegmentOptions
    from engine.models import find_model_set

    chosen_set = find_model_set(args.model) if not Path(args.model).expanduser().exists() else None
    if chosen_set is not None:
        if args.label_map:
            raise InputError("--label-map applies to one model; a model set uses the built-in maps of its parts.")
        ms, parts, set_notes = chosen_set
        models = list(parts)
    else:
        models = [find_model(args.model, label_map=args.label_map)]
    extra_maps = list(args.extra_label_map) + [None] * (len(args.extra_model) - len(args.extra_label_map))
    for extra, extra_map in zip(args.extra_model, extra_maps):
        if extra_map is not None and extra_map.strip().lower() == "none":
            extra_map = None
        try:
            models.append(find_model(extra, label_map=extra_map))
        except LiverPlanError as err:
            raise type(err)(f"Extra model {extra}: {err}") from None
    for m in models:
        print(f"model: {m.headline()}" + (f" [{m.card.licence}]" if m.card.licence else ""), file=sys.stderr)
    run_model = (ModelSetChoice(ms.name, models, list(set_notes)) if chosen_set is not None
                 else models if len(models) > 1 else models[0])
    options = SegmentOptions(mode=args.mode, device=args.device, threads=args.threads, **option_fields(args))
    out = Path(args.out).expanduser()
    from engine.cli.paths import out_in_folder, source_folder

    src = Path(args.input).expanduser()
    folder = source_folder(src)              # one DICOM file opens its whole series, from its folder
    where = out_in_folder(out, folder)
    if where == "is":
        raise InputError(f"--out {out} is the input folder; source data is only ever read. Choose another "
                         "--out.")
    if where == "inside" and _inputs(str(folder)) == [folder]:
        # a DICOM folder (not a batch of CT files): a result written inside it (a DICOM SEG above all) would
        # be read as part of it
        raise InputError(f"--out {out} is inside the DICOM folder {folder}; source data is only ever read, and "
                         "files added there would be read with the series next time. Choose another --out.")
    made_out = not out.exists()              # a failed run removes the folder it made (issue 13)
    _check_writable(out)                     # before any model runs, not after
    try:
        return _run_cases(args, run_model, options, out)
    finally:
        if made_out:
            _remove_if_empty(out)


def _remove_if_empty(folder) -> None:
    """Remove a folder this run created when nothing was left in it (every case failed)."""
    try:
        folder.rmdir()                       # only succeeds when empty
    except OSError:
        pass


def _run_cases(args: argparse.Namespace, run_model, options, out) -> int:
    import sys
    from pathlib import Path

    from engine.cli.progressbar import TextProgress
    from engine.errors import ExportError, LiverPlanError
    from engine.inference import segment
    from engine.io import load_case
    from engine.report import lesion_table_path, write_segmentation_outputs

    inputs = _inputs(args.input)
    failures = 0
    used_names: dict[str, Path] = {}
    for path in inputs:
        bar = None if args.no_progress else TextProgress()
        written: list = []
        try:
            case = load_case(path, series=args.series, progress=bar)
            name = _case_name(path, case)
            if name in used_names:
                # two inputs of one batch with the same name (a.nii.gz and a.nrrd, DICOM series with one
                # description): never let the second replace the first's results
                k = 2
                while f"{name}_{k}" in used_names:
                    k += 1
                print(f"{path.name}: its name '{name}' is taken by {used_names[name].name} in this batch; "
                      f"writing it as '{name}_{k}'.", file=sys.stderr)
                name = f"{name}_{k}"
            used_names[name] = path
            targets = {"seg": out / f"{name}_seg{args.format}", "csv": out / f"{name}_measurements.csv",
                       "json": out / f"{name}_measurements.json", "prov": out / f"{name}_segmentation.json"}
            checked = list(targets.values()) + [lesion_table_path(targets["csv"])]
            if getattr(args, "uncertainty", False):
                checked.append(out / f"{name}_uncertainty.nii.gz")
            if not args.overwrite:
                existing = [str(p) for p in checked if p.exists()]
                if existing:
                    raise LiverPlanError(f"{existing[0]} already exists; use --overwrite to replace it.")
            if args.format == ".dcm":
                from engine.io.dicomseg import dicom_seg_problem
                problem = dicom_seg_problem(case)      # known before the model runs, not after
                if problem:
                    raise ExportError(problem)
            result = segment(case, run_model, options, progress=bar)
            if bar is not None:
                bar.close()
            # every warning that bears on the result comes back: the scan's own, the model's, the measurements'
            paths = {**targets, "couinaud": out / f"{name}_couinaud.nii.gz"}
            if getattr(args, "uncertainty", False):
                paths["uncertainty"] = out / f"{name}_uncertainty.nii.gz"
            _, warnings = write_segmentation_outputs(case, result, paths, str(path), args.overwrite, written)
            t = result.timings
            print(f"{path.name}: {targets['seg']} ({result.device_used}, {result.mode}, {t.get('total', 0):.1f} s)")
            for w in warnings:
                print(f"  warning: {w}")
        except LiverPlanError as err:
            if bar is not None:
                bar.close()
            if written:
                # each file is whole (atomic writes), but an incomplete set would be read as a result: the
                # files this run wrote for the failed case are removed
                for p in written:
                    Path(p).unlink(missing_ok=True)
                err = ExportError(f"{err} The {len(written)} file(s) already written for this case were removed "
                                  f"({', '.join(Path(p).name for p in written)}).")
            if len(inputs) == 1:
                raise err from None
            failures += 1
            print(f"{path.name}: {err}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(inputs)} cases failed.", file=sys.stderr)
        return 1
    return 0
