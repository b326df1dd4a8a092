"""``liverplan evaluate``: predictions vs references with the study's metric suite, as the study's table."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="PATH",
                        help="prediction label map, or a folder of them (NIfTI, NRRD, .seg.nrrd, MHA)")
    parser.add_argument("--ref", required=True, metavar="PATH",
                        help="reference label map / mask folder / DICOM SEG, or a folder of them (matched by case "
                             "name; extensions and suffixes such as _0000, _seg, _pred are ignored)")
    parser.add_argument("--labels", metavar="MAP",
                        help="label mapping (JSON file or preset: ircadb, totalsegmentator, identity) for both "
                             "prediction and reference")
    parser.add_argument("--ref-labels", metavar="MAP", help="label mapping for the references only")
    parser.add_argument("--pred-labels", metavar="MAP", help="label mapping for the predictions only")
    parser.add_argument("--out", metavar="DIR",
                        help="write per_case.csv, lesions.csv and the table as table.csv/table.md/table.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    parser.add_argument("--format", choices=("text", "markdown"), default="text",
                        help="how the table is printed (default: aligned text)")
    parser.add_argument("--all-metrics", action="store_true",
                        help="table rows for every metric (HD95 variants, HD, ASSD, |Δb2|), not only the study's")
    parser.add_argument("--inf-penalty", type=float, metavar="MM",
                        help="replace infinite distances (missed structures) by this value in the means")
    parser.add_argument("--lesion-sizes", default="10", metavar="MM[,MM...]",
                        help="lesion-wise recall also for reference lesions >= these diameters (default 10)")
    parser.add_argument("--lesion-min-iou", type=float, default=0.1,
                        help="IoU a predicted lesion needs to count as finding a reference lesion (default 0.1)")
    from engine.cli.cluster import add_arguments as add_cluster_arguments   # issue 21: --cluster
    add_cluster_arguments(parser, resume=False)
    parser.add_argument("--report", action="store_true",
                        help="also write the metric report into --out: report.html (self-contained, plots as SVG) "
                             "and report.pdf: the table, box plots, volume agreement (Bland-Altman), lesion "
                             "detection by size, the worst cases with pictures, definitions and provenance")
    parser.add_argument("--compare", metavar="OTHER_EVAL_DIR",
                        help="compare with another evaluation (the --out folder of an earlier evaluate run on the "
                             "same cases): writes comparison.html/.pdf with both models in the plots, paired "
                             "differences and a Wilcoxon signed-rank test per structure and metric (implies --report)")
    parser.add_argument("--worst", type=int, default=5, metavar="K",
                        help="pictured worst cases per structure in the report (lowest Dice; default 5, 0 = none)")


def run(args: argparse.Namespace) -> int:
    from engine import evaluation
    from engine.cli.measure import load_mapping
    from engine.cli.progressbar import TextProgress
    from engine.errors import InputError
    from metrics.suite import ALL_METRICS, STUDY_METRICS

    try:
        sizes = tuple(float(s) for s in str(args.lesion_sizes).split(",") if s.strip())
    except ValueError:
        raise InputError(f"--lesion-sizes must be numbers in mm separated by commas, not '{args.lesion_sizes}'.")
    want_report = bool(args.report or args.compare)
    if want_report and not args.out:
        raise InputError("--report and --compare write the report into the evaluation folder: give --out DIR too.")
    if args.worst < 0:
        raise InputError(f"--worst must be 0 or more cases, not {args.worst}.")
    if args.compare:
        from engine.metric_report import load_evaluation
        load_evaluation(args.compare)       # a wrong folder is said before minutes of metrics, not after
    if args.out:
        evaluation.check_outputs(args.out, overwrite=args.overwrite)     # before minutes of metrics, not after
        if want_report:
            from engine.reporting.write import check_targets
            check_targets(args.out, "comparison" if args.compare else "report", overwrite=args.overwrite)
    ref_map = load_mapping(args.ref_labels or args.labels)
    pred_map = load_mapping(args.pred_labels or args.labels)
    bar = TextProgress()
    try:
        if args.cluster:                            # issue 21: one task per pair on Dask
            from engine.cli.cluster import evaluate_on_cluster
            cohort = evaluate_on_cluster(args, pred_map, ref_map, sizes, progress=bar)
        else:
            cohort = evaluation.evaluate_cohort(args.pred, args.ref, pred_map, ref_map, progress=bar,
                                                lesion_size_thresholds_mm=sizes, lesion_min_iou=args.lesion_min_iou)
    finally:
        bar.close()
    rows = None
    if args.all_metrics:
        rows = list(ALL_METRICS)
        rows += ["lesion_recall", "lesion_precision", "lesion_f1", "lesion_dice"]
        rows += [f"lesion_recall_ge{int(s) if s.is_integer() else s}mm" for s in sizes]
    elif cohort.results and not any("crlm" in r for r in cohort.results):
        rows = list(STUDY_METRICS)
    table = evaluation.cohort_table(cohort, metrics_rows=rows, inf_penalty=args.inf_penalty)
    n_ok = len(cohort.results)
    print(f"Evaluated {n_ok} of {len(cohort.cases)} paired case(s).")
    for c in cohort.failed:
        print(f"  skipped {c.name}: {c.error}")
    if cohort.only_pred:
        print(f"  predictions without a reference: {', '.join(cohort.only_pred)}")
    if cohort.only_ref:
        print(f"  references without a prediction: {', '.join(cohort.only_ref)}")
    if n_ok:
        print("")
        print(table.to_markdown() if args.format == "markdown" else table.to_text())
    if args.out:
        prov = {"pred": str(Path(args.pred).expanduser().resolve()), "ref": str(Path(args.ref).expanduser().resolve()),
                "command": _command(args),
                "lesion_min_iou": args.lesion_min_iou, "lesion_sizes_mm": list(sizes),
                "pred_mapping": _mapping_record(args.pred_labels or args.labels, pred_map),
                "ref_mapping": _mapping_record(args.ref_labels or args.labels, ref_map),
                "model": evaluation.model_of_predictions(args.pred)}
        paths = evaluation.write_outputs(cohort, table, args.out, overwrite=args.overwrite, provenance=prov)
        print("Wrote " + ", ".join(str(p) for p in paths))
        if want_report and n_ok:
            from engine.metric_report import write_metric_report
            bar = TextProgress()
            try:
                rpaths, _ = write_metric_report(args.out, compare_dir=args.compare, worst_k=args.worst,
                                                overwrite=args.overwrite, progress=bar)
            finally:
                bar.close()
            print("Report: " + ", ".join(str(p) for p in rpaths))
    return 0 if n_ok else 1


def _mapping_record(spec, mapping):
    """How a label mapping is recorded in evaluation.json (so a report can re-read the cases the same way)."""
    if mapping is None:
        return None
    return {"name": str(spec), "json": mapping.to_json_dict()}


def _command(args: argparse.Namespace) -> str:
    """The evaluate command as it ran (its options, in words a reader can rerun), for the report's provenance."""
    parts = ["evaluate", "--pred", str(args.pred), "--ref", str(args.ref)]
    for flag, value in (("--labels", args.labels), ("--ref-labels", args.ref_labels),
                        ("--pred-labels", args.pred_labels), ("--inf-penalty", args.inf_penalty)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--lesion-sizes", str(args.lesion_sizes), "--lesion-min-iou", str(args.lesion_min_iou)]
    if args.all_metrics:
        parts.append("--all-metrics")
    return " ".join(shlex.quote(p) for p in parts)
