"""The study's method end to end: cohort -> nnU-Net dataset -> plan -> train -> export -> tables.

:func:`run_pipeline` is what ``python main.py train`` runs. Every stage can be resumed: with
``continue_training`` an existing dataset, plans and checkpoint in the work folder are reused. With
``init_weights`` a further training phase starts from given weights (a warm restart: new learning-rate
schedule and time budget), reusing the work folder's dataset and plans when they exist.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, no_progress
from .plans import SMALL_CONFIGURATION, SmallNetSpec

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Everything one training run needs; the CLI flags of ``main.py train`` map onto these fields."""

    work_dir: Path
    # --- cohort ---
    cohort: Optional[str] = None            # CSV / JSON / folder (engine.training.cohort)
    label_map: Optional[str] = None         # LabelMapping JSON or preset name
    external: Optional[str] = None          # a second cohort description: all its cases are external
    external_label_map: Optional[str] = None
    phantoms: int = 0                       # synthetic cohort instead of (or besides) files
    phantom_first_seed: int = 1000
    phantom_shape: tuple[int, int, int] = (96, 128, 128)
    phantom_spacing: Optional[tuple[float, float, float]] = (2.5, 2.5, 2.5)
    external_phantoms: int = 0
    phantom_version: int = 1                 # 2: engine.phantom_v2 (neighbours at liver-like densities)
    phantom_randomise: bool = False          # v2 only: engine.training.randomise (domain randomisation)
    phantom_rand_seed: int = 0
    phantom_lesion_appearances: bool = True  # v2: False = plain v1-like lesions (ablation)
    # --- dataset / split ---
    dataset_id: int = 501
    dataset_name: str = "LiverPlan"
    test_fraction: float = 0.2
    split_seed: int = 0
    cv_folds: int = 1                        # 1: fold 0 = the 80/20 split; k: k-fold CV inside the 80 %
    # --- plans ---
    configuration: str = SMALL_CONFIGURATION   # or nnU-Net's own "3d_fullres" (GPU)
    patch_size: tuple[int, int, int] = (64, 64, 64)
    features: tuple[int, ...] = (8, 16, 32, 64)
    batch_size: int = 2
    target_spacing: Optional[tuple[float, float, float]] = None
    # --- training ---
    fold: int = 0
    device: str = "auto"
    epochs: int = 100
    iterations_per_epoch: int = 50
    val_iterations: int = 5
    time_limit_min: Optional[float] = None
    oversample_foreground: float = 0.5
    initial_lr: float = 1e-2
    continue_training: bool = False
    init_weights: Optional[Path] = None     # new training phase from these weights (same configuration)
    threads: Optional[int] = None
    n_proc: int = 1
    da_processes: Optional[int] = None      # nnU-Net data-augmentation workers (None: nnU-Net's choice)
    num_gpus: int = 1                       # > 1: nnU-Net's multi-GPU training (DDP), one process per GPU
    # --- export / evaluation ---
    export_dir: Optional[Path] = None
    zip_path: Optional[Path] = None
    model_name: str = "LiverPlan model"
    model_version: str = "1.0"
    demo: bool = False
    training_data: str = ""
    evaluate: bool = True
    eval_mode: str = "fast"
    command: str = ""
    card_note: str = ""                     # limitations stated in the model card
    check_only: bool = False
    skip_training: bool = False             # export/evaluate an existing checkpoint only
    overwrite: bool = False                 # replace a finished training in work_dir (else refused)
    allow_non_hu: bool = False              # images not in CT Hounsfield units: a warning, not a problem

    def spec(self) -> SmallNetSpec:
        return SmallNetSpec(tuple(self.patch_size), tuple(self.features), int(self.batch_size))

    def validate(self) -> None:
        """Refuse settings that cannot work, in words, before anything is read or written (nnU-Net would
        otherwise fail minutes later with a ZeroDivisionError, an IndexError or a hang)."""
        bad: list[str] = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                bad.append(msg)

        need(self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})")
        need(self.iterations_per_epoch >= 1, f"--iterations must be at least 1 (got {self.iterations_per_epoch})")
        need(self.val_iterations >= 1, f"--val-iterations must be at least 1 (got {self.val_iterations})")
        need(self.initial_lr >= 0, f"--lr must be 0 or more (got {self.initial_lr:g})")
        need(0.0 <= self.oversample_foreground <= 1.0,
             f"--oversample is a fraction of the batch, 0 to 1 (got {self.oversample_foreground:g})")
        need(self.num_gpus >= 1, f"--num-gpus must be 1 or more (got {self.num_gpus})")
        need(self.num_gpus == 1 or self.time_limit_min is None,
             "--time-limit cannot be combined with --num-gpus above 1 (the GPUs' processes would each stop on "
             "their own clock and wait for one another forever); give --epochs instead")
        need(self.time_limit_min is None or self.time_limit_min > 0,
             f"--time-limit must be above 0 minutes (got {self.time_limit_min})")
        need(0.0 < self.test_fraction < 1.0, f"--test-fraction must lie between 0 and 1 (got {self.test_fraction:g})")
        need(self.cv_folds >= 1, f"--cv-folds must be at least 1 (got {self.cv_folds})")
        need(self.fold >= 0, f"--fold must be 0 or more (got {self.fold})")
        need(self.threads is None or self.threads >= 1, f"--threads must be at least 1 (got {self.threads})")
        need(self.n_proc >= 1, f"--processes must be at least 1 (got {self.n_proc})")
        need(self.da_processes is None or self.da_processes >= 0,
             f"--da-processes must be 0 (augment in the training process) or more (got {self.da_processes})")
        need(self.phantoms >= 0 and self.external_phantoms >= 0, "phantom counts must be 0 or more")
        need(self.phantom_version in (1, 2), f"--phantom-version is 1 or 2 (got {self.phantom_version})")
        need(not self.phantom_randomise or self.phantom_version == 2,
             "--randomise works on version 2 phantoms: add --phantom-version 2")
        if self.init_weights is not None:
            need(not self.continue_training, "--init-weights cannot be combined with --continue: --continue resumes "
                 "a training's own schedule, --init-weights starts a new phase from given weights; choose one")
            need(Path(self.init_weights).expanduser().is_file(),
                 f"--init-weights {self.init_weights}: there is no such checkpoint file")
        if self.phantoms or self.external_phantoms:
            need(all(n >= 16 for n in self.phantom_shape),
                 f"--phantom-shape must be at least 16 voxels per axis (got {tuple(self.phantom_shape)})")
            need(self.phantom_spacing is None or all(v > 0 for v in self.phantom_spacing),
                 "--phantom-spacing must be above 0 mm")
        need(self.target_spacing is None or all(v > 0 for v in self.target_spacing),
             "--target-spacing must be above 0 mm")
        if self.configuration == SMALL_CONFIGURATION:
            feats = tuple(self.features)
            need(len(feats) >= 2 and all(f >= 1 for f in feats),
                 f"--features needs at least 2 stages of 1 or more feature maps (got {feats})")
            need(all(p >= 1 for p in self.patch_size), f"--patch sizes must be positive (got {tuple(self.patch_size)})")
            need(self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})")
            if len(feats) >= 2 and all(p >= 1 for p in self.patch_size):
                div = 2 ** (len(feats) - 1)
                # instance norm needs more than one voxel at the deepest stage
                need(all(p % div == 0 and p // div >= 2 for p in self.patch_size),
                     f"each --patch size must be a multiple of {div} and at least {2 * div} for a "
                     f"{len(feats)}-stage network (got {tuple(self.patch_size)}); use fewer --features stages "
                     "or a larger patch")
        if bad:
            raise InputError("These training settings cannot work:\n  " + "\n  ".join(bad))


@dataclass
class PipelineResult:
    work_dir: Path
    dataset_dir: Optional[Path] = None
    model_dir: Optional[Path] = None
    zip_path: Optional[Path] = None
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)   # set -> {"csv","md","cases"}
    markdown: dict[str, str] = field(default_factory=dict)
    train: Optional[object] = None
    cohort_report: Optional[str] = None
    report: list = field(default_factory=list)      # training_report.html / .pdf


def resolve_training_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA GPU is there, else 'cpu' (nnU-Net trains on cuda, cpu or mps).
    Raises InputError for a device this machine does not have, so that it is said before any work."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("Training on 'cuda' was asked for but this machine has no usable CUDA GPU; "
                         "use --device cpu (slow) or run on a GPU workstation.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise InputError("Training on 'mps' (Apple GPU) was asked for but this machine has none; "
                         "use --device cpu or cuda.")
    return device


def _sources(opts: TrainOptions, say: Callable[[str], None], progress, cancel):
    """(train sources, external sources, provenance, cohort report text)."""
    from .cohort import Cohort, check_cohort, entry_loader, external_has_own_label_map, load_cohort
    from .cohort import _load_mapping as load_label_mapping        # as load_cohort reads a given --label-map
    from .phantoms import phantom_cohort

    train, external, prov, reports = [], [], {}, []
    ext_desc, ext_map = opts.external, opts.external_label_map
    if not ext_desc and opts.cohort and Path(opts.cohort).is_dir() and external_has_own_label_map(opts.cohort):
        ext_desc = str(Path(opts.cohort) / "external")        # its label_map.json is read with it
    parts: list[tuple[str, object, str]] = []          # (description, Cohort, "cohort" | "external")
    if opts.cohort:
        main_cohort = load_cohort(opts.cohort, label_map=opts.label_map)
        inline_ext = main_cohort.of_set("external")     # set=external rows / a cohort folder's external/
        if inline_ext and ext_desc:
            raise InputError(f"{opts.cohort} lists external cases of its own and --external gives another "
                             "external set; use one of them.")
        if main_cohort.of_set("train") or not inline_ext:
            # (a file of external cases only is fine when --phantoms gives the training cases)
            parts.append((opts.cohort, Cohort(main_cohort.of_set("train"), main_cohort.label_map,
                                              main_cohort.source), "cohort"))
        if inline_ext:
            # the external cases are only evaluated: checked as such, with --external-label-map when given
            ext_lm = load_label_mapping(ext_map, Path(".")) if ext_map else main_cohort.label_map
            parts.append((opts.cohort, Cohort(inline_ext, ext_lm, main_cohort.source), "external"))
    if ext_desc:
        ext_cohort = load_cohort(ext_desc, label_map=ext_map)
        for e in ext_cohort.entries:
            e.set = "external"
        parts.append((ext_desc, ext_cohort, "external"))
    seen: dict[str, str] = {}
    for desc, cohort, role in parts:
        for e in cohort.entries:
            if e.case_id in seen and seen[e.case_id] != role:
                raise InputError(f"The case id {e.case_id} is both a training and an external case; case ids "
                                 "must be unique.")
            seen[e.case_id] = role
    for desc, cohort, role in parts:
        forced_set = role == "external"
        report = check_cohort(cohort, min_train=0 if forced_set else 2, progress=progress, cancel=cancel,
                              allow_non_hu=opts.allow_non_hu, for_training=not forced_set)
        reports.append(report.text())
        say(report.text())
        if not report.ok:
            raise InputError("The cohort has problems; nothing was written. Fix them and run again:\n"
                             + report.text())
        for e in cohort.entries:
            (external if forced_set else train).append((e.case_id, entry_loader(e, cohort.label_map)))
        prov[role] = {"description": str(desc), "label_map": getattr(cohort.label_map, "name", None)}
        if forced_set and cohort.label_map is not None:
            # the evaluation needs what the external references merge or lack (e.g. IRCADb: HV + IVC)
            prov[role]["label_map_json"] = cohort.label_map.to_json_dict()
    if opts.phantoms:
        train += phantom_cohort(opts.phantoms, opts.phantom_first_seed, opts.phantom_shape, opts.phantom_spacing,
                                version=opts.phantom_version, randomise=opts.phantom_randomise,
                                rand_seed=opts.phantom_rand_seed,
                                lesion_appearances=opts.phantom_lesion_appearances)
        prov["phantoms"] = {"n": opts.phantoms, "first_seed": opts.phantom_first_seed,
                            "shape_zyx": list(opts.phantom_shape),
                            "spacing_zyx_mm": list(opts.phantom_spacing) if opts.phantom_spacing else None}
        if opts.phantom_version != 1 or opts.phantom_randomise:
            prov["phantoms"]["version"] = int(opts.phantom_version)
            prov["phantoms"]["lesion_appearances"] = bool(opts.phantom_lesion_appearances)
        if opts.phantom_randomise:
            from .randomise import DESCRIPTION, RANDOMISATION_RANGES
            prov["phantoms"]["randomisation"] = {"rand_seed": opts.phantom_rand_seed, "description": DESCRIPTION,
                                                 "ranges": {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in RANDOMISATION_RANGES.items()}}
    if opts.external_phantoms:
        first = opts.phantom_first_seed + max(opts.phantoms, 0) + 10000
        external += phantom_cohort(opts.external_phantoms, first, opts.phantom_shape, opts.phantom_spacing,
                                   prefix="external", version=opts.phantom_version)
        prov["external_phantoms"] = {"n": opts.external_phantoms, "first_seed": first}
    if not train:
        raise InputError("No training cases: give a cohort description (--cohort) or --phantoms N.")
    return train, external, prov, "\n".join(reports)


def _dataset_description(opts: TrainOptions) -> str:
    """dataset.json's description: the given training-data text, plus what the phantoms' builder did."""
    text = opts.training_data
    if opts.phantoms and opts.phantom_randomise:
        from .randomise import DESCRIPTION
        text = (text + "; " if text else "") + DESCRIPTION
    elif opts.phantoms and opts.phantom_version == 2:
        text = (text + "; " if text else "") + "phantoms v2 (engine.phantom_v2), realistic portal-phase densities"
    return text


def _reference_mapping(raw_dir: Path, set_name: str):
    """The label mapping an external set's references were read with, when it merges or lacks structures
    (stored in the dataset's provenance); None: LiverPlan's five labels."""
    from ..labelmap import LabelMapping

    try:
        prov = json.loads((raw_dir / "dataset.json").read_text())["liverplan"]["provenance"]
        d = prov[set_name]["label_map_json"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    m = LabelMapping.from_json_dict(d, name=str(prov[set_name].get("label_map") or "external"))
    return m if (m.missing_structures() or m.merged_groups) else None


def run_pipeline(opts: TrainOptions, progress: ProgressCallback = no_progress,
                 cancel: Optional[CancelToken] = None, say: Callable[[str], None] = log.info) -> PipelineResult:
    """Run the stages; ``say`` receives one-line status messages (the CLI prints them)."""
    from .env import configure_nnunet_environment

    opts.validate()
    device = None
    if opts.check_only:
        # the cohort may be checked on a laptop for a GPU workstation: a missing device is said, not refused
        try:
            resolve_training_device(opts.device)
        except InputError as err:
            say(f"Note: {err} (--check-only checked the rest; training here would be refused.)")
    elif not (opts.skip_training and not opts.evaluate):
        device = resolve_training_device(opts.device)
    if opts.num_gpus > 1 and not opts.skip_training:
        from .runner import check_ddp_gpus
        try:
            check_ddp_gpus(opts.num_gpus, opts.device)
        except InputError as err:
            if not opts.check_only:
                raise
            say(f"Note: {err} (--check-only checked the rest.)")
    from .dataset import dataset_folder_name, read_split, write_nnunet_dataset
    folder = dataset_folder_name(opts.dataset_id, opts.dataset_name)
    reuse = opts.continue_training or opts.skip_training or opts.init_weights is not None
    if not (reuse or opts.check_only or opts.overwrite):
        from .runner import PLANS, TRAINER
        done = sorted((Path(opts.work_dir) / "nnUNet_results" / folder).glob(
            f"{TRAINER}__{PLANS}__*/fold_*/checkpoint_*.pth"))
        if done:
            raise InputError(f"{opts.work_dir} already holds a training of {folder} ({done[-1].parent.parent.name}, "
                             f"{done[-1].parent.name}). Use --continue to resume it, --skip-training to export and "
                             "evaluate it again, --init-weights to train a further phase from it, another "
                             "--work-dir, or --overwrite to replace it (its dataset and checkpoints are deleted).")
    if opts.check_only:
        # nothing is written: not even nnU-Net's (empty) folders
        train_src, ext_src, prov, report = _sources(opts, say, progress, cancel)
        say("Cohort check only: nothing written.")
        return PipelineResult(work_dir=Path(opts.work_dir).resolve(), cohort_report=report)
    dirs = configure_nnunet_environment(opts.work_dir, n_proc=opts.n_proc, threads=opts.threads)
    res = PipelineResult(work_dir=dirs.root)
    raw_dir = dirs.raw / folder
    if opts.overwrite and not reuse and (dirs.results / folder).is_dir():
        import shutil
        say(f"--overwrite: deleting the earlier training in {dirs.results / folder}.")
        shutil.rmtree(dirs.results / folder)
    if reuse and (raw_dir / "liverplan_split.json").is_file():
        say(f"Reusing the dataset in {raw_dir}.")
        split = read_split(raw_dir)
    else:
        train_src, ext_src, prov, report = _sources(opts, say, progress, cancel)
        res.cohort_report = report
        say(f"Writing the nnU-Net dataset {folder} ({len(train_src)} cases + {len(ext_src)} external).")
        info = write_nnunet_dataset(dirs.raw, dirs.preprocessed, opts.dataset_id, opts.dataset_name, train_src,
                                    ext_src, test_fraction=opts.test_fraction, seed=opts.split_seed,
                                    provenance=prov, overwrite=True, progress=progress, cancel=cancel,
                                    cv_folds=opts.cv_folds,
                                    description=_dataset_description(opts))
        split = info.split
    res.dataset_dir = raw_dir
    say(f"Split (seed {split.seed}): {len(split.train)} train, {len(split.test)} held-out test, "
        f"{len(split.external)} external.")

    # --- plan + preprocess ---
    plans_path = dirs.preprocessed / folder / "nnUNetPlans.json"
    spec = opts.spec() if opts.configuration == SMALL_CONFIGURATION else None
    have_plans = plans_path.is_file() and opts.configuration in json.loads(plans_path.read_text()).get(
        "configurations", {}) and any((dirs.preprocessed / folder / "nnUNetPlans_3d_fullres").glob("*"))
    if not (reuse and have_plans):
        check(cancel)
        say("Planning and preprocessing with nnU-Net (3d_fullres data"
            + (f", small configuration {opts.configuration}: patch {tuple(opts.patch_size)}, features "
               f"{tuple(opts.features)}, batch {opts.batch_size}" if spec else "") + ").")
        from .runner import plan_and_preprocess
        plan_and_preprocess(opts.dataset_id, spec, target_spacing=opts.target_spacing, progress=progress)
        from .dataset import write_splits_final
        write_splits_final(dirs.preprocessed / folder, split, opts.cv_folds)  # planning may recreate the folder

    # --- train ---
    splits_file = dirs.preprocessed / folder / "splits_final.json"
    n_folds = len(json.loads(splits_file.read_text())) if splits_file.is_file() else 0
    if not 0 <= opts.fold < n_folds:
        # nnU-Net would silently invent a random 80:20 split for a missing fold, mixing test cases into
        # training; refuse instead.
        raise InputError(f"Fold {opts.fold} does not exist: {splits_file.name} has {n_folds} fold(s) "
                         f"(use --cv-folds K when writing the dataset for K cross-validation folds).")
    device = device or resolve_training_device(opts.device)
    from .runner import PLANS, TRAINER, train
    results_folder = dirs.results / folder / f"{TRAINER}__{PLANS}__{opts.configuration}"
    if not opts.skip_training:
        check(cancel)
        if opts.da_processes is not None:
            # Set only now: nnU-Net's planning crashes with nnUNet_n_proc_DA=0, training is fine with it.
            os.environ["nnUNet_n_proc_DA"] = str(int(opts.da_processes))
        say(f"Training {opts.configuration} fold {opts.fold} on "
            f"{f'{opts.num_gpus} GPUs (DDP)' if opts.num_gpus > 1 else device}: {opts.epochs} epochs x "
            f"{opts.iterations_per_epoch} iterations"
            + (f", at most {opts.time_limit_min:g} min" if opts.time_limit_min else "")
            + (" (continuing)" if opts.continue_training else "")
            + (f" (new phase from {opts.init_weights}, learning rate restarted at {opts.initial_lr:g})"
               if opts.init_weights is not None else "") + ".")
        res.train = train(opts.dataset_id, opts.configuration, opts.fold, device, opts.epochs,
                          opts.iterations_per_epoch, opts.val_iterations,
                          opts.time_limit_min * 60 if opts.time_limit_min else None, opts.continue_training,
                          opts.oversample_foreground, opts.initial_lr, opts.threads, progress, cancel,
                          init_weights=opts.init_weights, num_gpus=opts.num_gpus)
        say(f"Training finished after {res.train.epochs_done} epochs ({res.train.stopped_by}, "
            f"{res.train.seconds / 60:.1f} min).")

    # --- export ---
    from .export import export_model, model_card
    model_dir = Path(opts.export_dir) if opts.export_dir else dirs.root / "model"
    dataset_json = json.loads((results_folder / "dataset.json").read_text()) if (
        results_folder / "dataset.json").is_file() else {}
    card = model_card(opts.model_name, opts.model_version, dataset_json,
                      opts.training_data or f"{len(split.train)} training cases of {folder}", opts.command,
                      demo=opts.demo, configuration=opts.configuration, folds=(opts.fold,),
                      extra={**({"limitations": opts.card_note} if opts.card_note else {}), "split": {"train": len(split.train), "test": len(split.test),
                                       "external": len(split.external), "seed": split.seed}})
    export_model(results_folder, model_dir, card, folds=(opts.fold,), overwrite=True)
    res.model_dir = model_dir
    say(f"Model package written to {model_dir}.")

    # --- evaluate ---
    if opts.evaluate:
        from .evaluate import evaluate_split
        out = dirs.root / "evaluation"
        for set_name, ids in (("test", split.test), ("external", split.external)):
            if not ids:
                continue
            check(cancel)
            say(f"Evaluating the {set_name} set ({len(ids)} cases) with the study's metrics.")
            paths, md, summary = evaluate_split(model_dir, raw_dir, set_name, ids, out, device=device,
                                                mode=opts.eval_mode, ref_mapping=_reference_mapping(raw_dir, set_name),
                                                progress=progress, cancel=cancel)
            res.tables[set_name], res.markdown[set_name] = paths, md
            card.setdefault("evaluation", {})[set_name] = {
                "what": ("held-out test split" if set_name == "test" else "external validation set")
                + f" of {folder}, mean over cases, inference mode '{opts.eval_mode}'", **summary}
        if res.tables:
            # the study's Tables 3/4 as figures too: one report with the curves and every evaluated set
            from ..errors import LiverPlanError
            from ..metric_report import write_training_report
            sets = [("Held-out test set" if k == "test" else "External set", v["dir"]) for k, v in res.tables.items()]
            try:
                res.report = write_training_report(sets, out, fold_dir=results_folder / f"fold_{opts.fold}",
                                                   title=f"Training report: {opts.model_name} {opts.model_version}",
                                                   overwrite=True, cancel=cancel)
                say("Training report: " + ", ".join(str(p) for p in res.report))
            except LiverPlanError as err:          # the tables and the model stand without the report
                say(f"The training report could not be written: {err}")
            from ..io.atomic import write_text_atomic
            from .export import CARD_NAME
            write_text_atomic(model_dir / CARD_NAME, json.dumps(card, indent=2), overwrite=True)
            (model_dir / CARD_NAME).chmod(0o644)
    if opts.zip_path is not None:
        # last, so that the zip's model card holds the evaluation too
        from .export import zip_folder
        zip_folder(model_dir, Path(opts.zip_path), overwrite=True)
        res.zip_path = Path(opts.zip_path)
        say(f"Model package zipped to {opts.zip_path} (install with 'python main.py models install').")
    return res
