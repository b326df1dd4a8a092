"""``--cluster`` for ``segment``, ``measure`` and ``evaluate``: a cohort on Dask distributed, one task per case.

The serial commands call :func:`run_on_cluster` (segment, measure) or :func:`evaluate_on_cluster` when
``--cluster`` is given; without it nothing here runs. See engine/cluster for the machinery.
"""
from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

_CT_EXTENSIONS = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")


def add_arguments(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """The cluster options of a command (argparse only: cheap)."""
    g = parser.add_argument_group("cohort on a cluster (Dask distributed; needs: pip install 'liverplan[cluster]')")
    g.add_argument("--cluster", metavar="SPEC",
                   help="run one task per case on Dask: local[:N] (N worker processes on this computer), "
                        "tcp://HOST:PORT (a running Dask scheduler), slurm[:FILE.yaml] (dask-jobqueue; also pbs, "
                        "sge, lsf). The input may then also be a cohort file (CSV/JSON as for train --cohort). Without it "
                        "everything runs in this process, as before")
    g.add_argument("--cluster-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the scheduler to answer and for a first worker (default 30)")
    if resume:
        g.add_argument("--resume", action="store_true",
                       help="with --cluster: skip the cases whose outputs are complete and whose inputs and "
                            "settings are unchanged (each case's <case>_<command>_done.json record); redo the rest")


def _say(msg: str) -> None:
    """A line on stdout that does not run into the progress bar's line on stderr."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 100 + "\r")
        sys.stderr.flush()
    print(msg, flush=True)


def _stem(p: Path) -> str:
    from engine.case import safe_file_stem

    name = p.name
    for ext in _CT_EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return safe_file_stem(name)


def _unique(names: list[str]) -> list[str]:
    """Names made unique the way the serial command does (a second 'a' becomes 'a_2')."""
    used: set[str] = set()
    out = []
    for n in names:
        m, k = n, 2
        while m in used:
            m, k = f"{n}_{k}", k + 1
        if m != n:
            print(f"two cases are named '{n}'; the second is written as '{m}'.", file=sys.stderr)
        used.add(m)
        out.append(m)
    return out


def _is_cohort_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in (".csv", ".json")


def _model_settings(models) -> list:
    """What identifies a model's results: its folder, checkpoint files and label mapping."""
    from engine.cluster.runner import fingerprint

    out = []
    for m in models:
        ckpts = [fingerprint(m.path / f"fold_{f}" / m.checkpoint_name) for f in m.folds]
        out.append({"path": str(m.path), "checkpoints": ckpts, "labels": sorted(m.label_to_structure.items())})
    return out


def _spec_text(spec: str) -> str:
    """A model or label-map spec as the workers should read it: an absolute path when it is a path here."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.exists() else spec


# ------------------------------------------------------------------------------------------------
def _segment_jobs(args, out: Path):
    from engine.cli.segment import _inputs
    from engine.cluster.runner import Job
    from engine.errors import InputError
    from engine.report import lesion_table_path

    src = Path(args.input).expanduser()
    if _is_cohort_file(src):
        from engine.training.cohort import load_cohort

        cohort = load_cohort(src)
        items = [(e.case_id, Path(e.image), e.series or args.series) for e in cohort.entries]
    else:
        items = [(_stem(p), p, args.series) for p in _inputs(args.input)]
    missing = [str(p) for _, p, _ in items if not p.exists()]
    if missing:
        raise InputError(f"{missing[0]} does not exist" + (f" (and {len(missing) - 1} more inputs)" if len(missing) > 1
                                                           else "") + "; nothing was run.")
    names = _unique([n for n, _, _ in items])
    from .segment import option_fields

    options = option_fields(args)               # the serial command's SegmentOptions fields
    jobs = []
    for name, (_, path, series) in zip(names, items):
        csv = f"{name}_measurements.csv"
        targets = {"seg": f"{name}_seg{args.format}", "csv": csv, "lesions": lesion_table_path(Path(csv)).name,
                   "json": f"{name}_measurements.json", "prov": f"{name}_segmentation.json"}
        jobs.append(Job(name, {"path": str(path.resolve()), "series": series, "format": args.format,
                               "options": options}, [path.resolve()], targets))
    return jobs, options


def _measure_jobs(args):
    from engine import evaluation
    from engine.cli.measure import load_mapping
    from engine.cli.segment import _inputs
    from engine.cluster.runner import Job
    from engine.errors import InputError
    from engine.report import lesion_table_path

    ct = Path(args.ct).expanduser()
    if _is_cohort_file(ct) or (ct.is_dir() and (ct / "images").is_dir()):
        from engine.training.cohort import load_cohort

        cohort = load_cohort(ct, label_map=args.labels_mapping)
        items = [(e.case_id, Path(e.image), Path(e.reference), e.series or args.series) for e in cohort.entries]
        mapping = cohort.label_map
    else:
        if not args.labels:
            raise InputError("measure --cluster needs the CT folder and the label-map folder (matched by case "
                             "name), or one cohort file (CSV/JSON, see 'train --cohort').")
        labels = Path(args.labels).expanduser()
        if not ct.is_dir() or not labels.is_dir():
            raise InputError(f"measure --cluster takes a folder of CTs and a folder of label maps (or a cohort "
                             f"file); {ct if not ct.is_dir() else labels} is not a folder.")
        refs = evaluation._entries(labels, allow_folders=True)
        items, unpaired = [], []
        for p in _inputs(str(ct)):
            name = evaluation.case_name(p)
            if name in refs:
                items.append((name, p, refs[name], args.series))
            else:
                unpaired.append(p.name)
        if unpaired:
            print(f"no label map in {labels} for: {', '.join(unpaired)} (not measured)", file=sys.stderr)
        if not items:
            raise InputError(f"No CT in {ct} has a label map of the same case name in {labels}; nothing was run.")
        mapping = load_mapping(args.labels_mapping)
    missing = [str(p) for it in items for p in it[1:3] if not p.exists()]
    if missing:
        raise InputError(f"{missing[0]} does not exist; nothing was run.")
    names = _unique([safe for safe in (_stem(Path(n)) for n, *_ in items)])
    jobs = []
    for name, (_, ctp, lab, series) in zip(names, items):
        csv = f"{name}_measurements.csv"
        jobs.append(Job(name, {"path": str(ctp.resolve()), "labels": str(lab.resolve()), "series": series,
                               "mapping": mapping},
                        [ctp.resolve(), lab.resolve()],
                        {"csv": csv, "lesions": lesion_table_path(Path(csv)).name,
                         "json": f"{name}_measurements.json"}))
    settings = {"command": "measure", "mapping": repr(getattr(mapping, "__dict__", mapping))}
    return jobs, settings


# ------------------------------------------------------------------------------------------------
def run_on_cluster(command: str, args: argparse.Namespace) -> int:
    """``segment`` or ``measure`` over a cohort on the cluster ``args.cluster``; 0 when every case is done or
    skipped, 1 when some failed."""
    import math

    from engine.cli.progressbar import TextProgress
    from engine.cluster.connect import open_cluster, parse_cluster_spec
    from engine.cluster.runner import (check_visibility, host_workers, install_plugin, plan, remove_plugin,
                                       run_jobs, skipped_only)
    from engine.cluster.worker import LiverPlanWorker, measure_task, segment_task
    from engine.errors import InputError, LiverPlanError

    if not args.cluster:
        raise InputError(("--resume and --out go" if command == "measure" else "--resume goes")
                         + " with --cluster (a cohort on Dask; --resume reads the records a cluster run writes "
                         "beside each case's outputs).")
    spec = parse_cluster_spec(args.cluster)
    if command == "segment":
        from engine.cli.paths import out_in_folder, source_folder
        from engine.cli.segment import _check_writable
        from engine.models import find_model

        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads must be 1 or more (got {args.threads}); leave it out to use the cores "
                             "of each worker's share.")
        if not math.isfinite(args.liver_crop_margin) or args.liver_crop_margin < 0:
            raise InputError(f"--liver-crop-margin must be a number of millimetres, 0 or more (got "
                             f"{args.liver_crop_margin}).")
        if len(args.extra_label_map) > len(args.extra_model):
            raise InputError(f"{len(args.extra_label_map)} --extra-label-map given for {len(args.extra_model)} "
                             "--extra-model: each label map goes with the --extra-model in the same position.")
        extra_maps = list(args.extra_label_map) + [None] * (len(args.extra_model) - len(args.extra_label_map))
        extra_maps = [None if m is not None and m.strip().lower() == "none" else m for m in extra_maps]
        from engine.releases import find_model_set
        if not Path(args.model).expanduser().exists() and find_model_set(str(args.model)) is not None:
            # the workers load single models; without this the set's name read "There is no model called ..."
            raise InputError(f"'{args.model}' is a model set, which --cluster does not run yet: run it without "
                             "--cluster, or give its parts as --model and --extra-model.")
        model_specs = [(args.model, args.label_map)] + list(zip(args.extra_model, extra_maps))
        models = []
        for k, (m, lm) in enumerate(model_specs):      # checked here, before any worker starts
            try:
                models.append(find_model(m, label_map=lm))
            except LiverPlanError as err:
                raise type(err)(f"Extra model {m}: {err}" if k else str(err)) from None
        for m in models:
            print(f"model: {m.card.headline()}", file=sys.stderr)
        out = Path(args.out).expanduser()
        src = Path(args.input).expanduser()
        where = out_in_folder(out, source_folder(src))
        if where is not None:
            raise InputError(f"--out {out} is {'the input folder' if where == 'is' else 'inside the input folder'}; "
                             "source data is only ever read. Choose another --out.")
        _check_writable(out)
        jobs, options = _segment_jobs(args, out)
        settings = {"command": "segment", "models": _model_settings(models), "mode": args.mode,
                    "format": args.format, "options": options}
        worker_models = [(_spec_text(m), _spec_text(lm) if lm else None) for m, lm in model_specs]
        task = segment_task
    else:
        if not args.out:
            raise InputError("measure --cluster needs --out DIR: the folder that receives each case's tables.")
        from engine.cli.segment import _check_writable

        out = Path(args.out).expanduser()
        _check_writable(out)
        jobs, settings = _measure_jobs(args)
        worker_models = []
        task = measure_task
    todo, skipped = plan(jobs, out, command, settings, resume=args.resume, overwrite=args.overwrite)
    if not todo:
        summary = skipped_only(command, skipped, out, say=_say)
    else:
        bar = None if getattr(args, "no_progress", False) else TextProgress()
        with open_cluster(spec, threads=getattr(args, "threads", None), timeout_s=args.cluster_timeout,
                          say=_say) as (client, info):
            shared = check_visibility(client, [p for j in todo for p in j.inputs], out)
            _say(f"Cluster: {info.description} at {info.address}, {len(info.workers)} worker(s); "
                 f"{len(todo)} case(s) to run, {len(skipped)} already complete. Outputs "
                 + ("are written by the workers into the shared folder " if shared else
                    "are returned to this computer (the workers cannot see ") + f"{out}" + ("" if shared else ")")
                 + ".")
            plugin = LiverPlanWorker(worker_models, device=getattr(args, "device", "cpu"),
                                     mode=getattr(args, "mode", "fast"), threads=getattr(args, "threads", None),
                                     host_workers=host_workers(client), name=f"liverplan-{secrets.token_hex(4)}")
            install_plugin(client, plugin)
            try:
                summary = run_jobs(client, info, command, task, todo, out=out, settings=settings, skipped=skipped,
                                   shared=shared, plugin_name=plugin.name, progress=bar, say=_say)
            finally:
                if bar is not None:
                    bar.close()
                remove_plugin(client, plugin)
    paths = summary.write(out)
    print(summary.text())
    print(f"Summary written to {paths[0]} and {paths[1].name}.")
    return 1 if summary.of("failed") else 0


def evaluate_on_cluster(args: argparse.Namespace, pred_map, ref_map, sizes, progress=None):
    """``evaluate --cluster``: every pair on the cluster; the same CohortResult (cases in pairing order) as
    engine.evaluation.evaluate_cohort, so the table is the serial one. The run summary is printed and, with
    --out, written there."""
    from engine import evaluation
    from engine.cluster.connect import open_cluster, parse_cluster_spec
    from engine.cluster.runner import Job, check_visibility, host_workers, install_plugin, remove_plugin, run_jobs
    from engine.cluster.worker import LiverPlanWorker, evaluate_task

    spec = parse_cluster_spec(args.cluster)
    pairing = evaluation.pair_cases(args.pred, args.ref)
    options = {"lesion_size_thresholds_mm": sizes, "lesion_min_iou": args.lesion_min_iou}
    jobs = [Job(name, {"pred": str(Path(pp).resolve()), "ref": str(Path(rp).resolve()), "pred_mapping": pred_map,
                       "ref_mapping": ref_map, "options": options}, [Path(pp), Path(rp)])
            for name, pp, rp in pairing.pairs]
    with open_cluster(spec, timeout_s=args.cluster_timeout, say=_say) as (client, info):
        check_visibility(client, [p for j in jobs for p in j.inputs], None)
        _say(f"Cluster: {info.description} at {info.address}, {len(info.workers)} worker(s); {len(jobs)} pair(s).")
        plugin = LiverPlanWorker([], host_workers=host_workers(client), name=f"liverplan-{secrets.token_hex(4)}")
        install_plugin(client, plugin)
        try:
            summary = run_jobs(client, info, "evaluate", evaluate_task, jobs, out=None, settings={}, shared=False,
                               plugin_name=plugin.name, progress=progress, say=_say)
        finally:
            remove_plugin(client, plugin)
    by_name = {o.name: o for o in summary.outcomes}
    records, notes = [], []
    for name, pp, rp in pairing.pairs:
        o = by_name[name]
        rec = evaluation.CaseRecord(name, str(pp), str(rp), seconds=o.seconds)
        if o.status == "done":
            rec.result, rec.spacing = o.value["result"], tuple(o.value["spacing"])
            notes += [n for n in o.value["notes"] if n not in notes]
        else:
            rec.error = o.reason
        records.append(rec)
    print(summary.text())
    if args.out:
        summary.write(Path(args.out).expanduser())
    return evaluation.CohortResult(records, pairing.only_pred, pairing.only_ref, notes)
