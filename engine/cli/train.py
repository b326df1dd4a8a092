"""``liverplan train``: cohort -> nnU-Net dataset -> plan -> train -> model package -> the study's tables.

Examples::

    # check a cohort only (nothing written)
    python main.py train --work-dir run1 --cohort cohort.csv --label-map labels.json --check-only
    # train on a GPU workstation with nnU-Net's own 3d_fullres plan
    python main.py train --work-dir run1 --cohort cohort.csv --configuration 3d_fullres --device cuda \
        --epochs 1000 --iterations 250 --export model_out --zip model.zip
    # resume after an interruption
    python main.py train --work-dir run1 --cohort cohort.csv --continue
    # a second training phase from earlier weights (fresh learning-rate schedule over 30 more minutes)
    python main.py train --work-dir run1 --cohort cohort.csv --init-weights phase1.pth --time-limit 30 --lr 0.01
"""
from __future__ import annotations

import argparse
import shlex
import sys


def _ints(n):
    return {"nargs": n, "type": int}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cohort")
    g.add_argument("--work-dir", required=True, metavar="DIR",
                   help="folder for nnU-Net's raw/preprocessed/results data of this run (nnUNet_raw, "
                        "nnUNet_preprocessed and nnUNet_results are set to subfolders of it)")
    g.add_argument("--cohort", metavar="PATH",
                   help="cohort description: CSV (case_id,image,reference[,set]), JSON, or a folder with "
                        "images/ and references/ (see engine/training/cohort.py)")
    g.add_argument("--label-map", metavar="MAP",
                   help="which reference label is which structure: a JSON file such as "
                        "{\"liver\": [1], \"portal_vein\": [2], ...} or a preset (ircadb, totalsegmentator, identity)")
    g.add_argument("--external", metavar="PATH", help="a second cohort description used only as external validation set")
    g.add_argument("--external-label-map", metavar="MAP", help="label map of the external cohort")
    g.add_argument("--phantoms", type=int, default=0, metavar="N",
                   help="add N synthetic phantoms (engine.phantom) to the training pool")
    g.add_argument("--phantom-seed", type=int, default=1000, help="seed of the first phantom (default 1000)")
    g.add_argument("--phantom-shape", **_ints(3), default=[96, 128, 128], metavar=("Z", "Y", "X"),
                   help="phantom size in voxels (default 96 128 128)")
    g.add_argument("--phantom-spacing", nargs=3, type=float, default=[2.5, 2.5, 2.5], metavar=("Z", "Y", "X"),
                   help="phantom voxel size in mm (default 2.5 2.5 2.5)")
    g.add_argument("--phantom-version", type=int, default=1, choices=(1, 2),
                   help="1 (default): engine.phantom; 2: engine.phantom_v2, the liver among neighbours of "
                        "liver-like density (spleen, stomach, kidneys, bowel, pancreas, heart)")
    g.add_argument("--randomise", action="store_true",
                   help="domain randomisation of the (version 2) phantoms: contrast timing, per-structure "
                        "densities, noise, blur, slice thickness 0.6-5 mm, partial fields of view "
                        "(engine/training/randomise.py)")
    g.add_argument("--plain-lesions", action="store_true",
                   help="version 2 phantoms with plain v1-like lesions (no necrotic, calcified or perivascular "
                        "kinds): for ablations")
    g.add_argument("--randomise-seed", type=int, default=0, help="seed of the randomisation draws (default 0)")
    g.add_argument("--external-phantoms", type=int, default=0, metavar="N",
                   help="N more phantoms (other seeds) as external validation set")
    g.add_argument("--check-only", action="store_true", help="check the cohort and stop (nothing is written)")
    g.add_argument("--allow-non-hu", action="store_true",
                   help="accept images whose values do not look like CT Hounsfield units (e.g. CTs cropped so "
                        "tightly that they hold no air); refused otherwise")
    d = parser.add_argument_group("dataset and split")
    d.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id (default 501)")
    d.add_argument("--dataset-name", default="LiverPlan", help="nnU-Net dataset name (default LiverPlan)")
    d.add_argument("--test-fraction", type=float, default=0.2, help="held-out test fraction (default 0.2)")
    d.add_argument("--split-seed", type=int, default=0, help="seed of the random train/test split (default 0)")
    d.add_argument("--cv-folds", type=int, default=1, metavar="K",
                   help="1 (default): nnU-Net fold 0 = the 80/20 split; K > 1: K-fold cross-validation inside "
                        "the 80 %% training cases (the test cases stay out of every fold)")
    p = parser.add_argument_group("network")
    p.add_argument("--configuration", default="3d_small",
                   help="3d_small (LiverPlan's small CPU-friendly configuration, default) or an nnU-Net "
                        "configuration such as 3d_fullres")
    p.add_argument("--patch", **_ints(3), default=[64, 64, 64], metavar=("Z", "Y", "X"),
                   help="3d_small patch size in voxels (default 64 64 64)")
    p.add_argument("--features", nargs="+", type=int, default=[8, 16, 32, 64],
                   help="3d_small feature maps per stage (default 8 16 32 64)")
    p.add_argument("--batch-size", type=int, default=2, help="3d_small batch size (default 2)")
    p.add_argument("--target-spacing", nargs=3, type=float, metavar=("Z", "Y", "X"),
                   help="resample the cohort to this spacing (mm) instead of nnU-Net's median")
    t = parser.add_argument_group("training")
    t.add_argument("--fold", type=int, default=0, help="fold to train (default 0: the 80/20 split)")
    t.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"), help="default auto")
    t.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="train on N CUDA GPUs of this machine with nnU-Net's own multi-GPU training (DDP: one "
                        "process per GPU, the batch split among them; default 1). Needs N CUDA GPUs; not with "
                        "--time-limit")
    t.add_argument("--epochs", type=int, default=100, help="epochs (default 100)")
    t.add_argument("--iterations", type=int, default=50, help="training iterations per epoch (default 50)")
    t.add_argument("--val-iterations", type=int, default=5, help="validation batches per epoch (default 5)")
    t.add_argument("--time-limit", type=float, metavar="MIN",
                   help="stop after this many minutes of training (the learning rate decays over this budget)")
    t.add_argument("--oversample", type=float, default=0.5, help="foreground oversampling fraction (default 0.5)")
    t.add_argument("--lr", type=float, default=0.01, help="initial learning rate (default 0.01)")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    t.add_argument("--processes", type=int, default=1, help="worker processes for preprocessing (default 1)")
    t.add_argument("--da-processes", type=int, metavar="N",
                   help="data-augmentation worker processes (nnUNet_n_proc_DA; 0 = in the training process)")
    t.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume: reuse the dataset, plans and the latest checkpoint in --work-dir")
    t.add_argument("--init-weights", metavar="CHECKPOINT",
                   help="start a new training phase from this checkpoint's network weights (same configuration): "
                        "epoch 0, a fresh optimiser and learning-rate schedule (--lr decaying over --epochs or "
                        "--time-limit); reuses the dataset and plans in --work-dir. Not with --continue")
    t.add_argument("--skip-training", action="store_true",
                   help="only export and evaluate the newest checkpoint in --work-dir")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a training already in --work-dir (refused without this flag: its checkpoints "
                        "would be lost)")
    e = parser.add_argument_group("model package and evaluation")
    e.add_argument("--export", metavar="DIR", help="model package folder (default WORK_DIR/model)")
    e.add_argument("--zip", metavar="FILE", help="also write the package as a zip (install with 'models install')")
    e.add_argument("--model-name", default="LiverPlan model", help="name in the model card")
    e.add_argument("--model-version", default="1.0", help="version in the model card")
    e.add_argument("--demo", action="store_true", help="mark the model as a demo model in its card")
    e.add_argument("--training-data", default="", help="training data description for the model card")
    e.add_argument("--card-command", metavar="TEXT",
                   help="the reproducing command to record in the model card (default: this command line)")
    e.add_argument("--card-note", metavar="TEXT", help="limitations to state in the model card")
    e.add_argument("--no-evaluate", action="store_true", help="skip the held-out/external evaluation")
    e.add_argument("--eval-mode", default="fast", choices=("fast", "accurate"), help="inference mode for evaluation")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.cli.progressbar import TextProgress
    from engine.training.pipeline import TrainOptions, run_pipeline

    command = "python main.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    opts = TrainOptions(
        work_dir=Path(args.work_dir), cohort=args.cohort, label_map=args.label_map, external=args.external,
        external_label_map=args.external_label_map, phantoms=args.phantoms, phantom_first_seed=args.phantom_seed,
        phantom_shape=tuple(args.phantom_shape), phantom_spacing=tuple(args.phantom_spacing),
        external_phantoms=args.external_phantoms, phantom_version=args.phantom_version,
        phantom_randomise=args.randomise, phantom_rand_seed=args.randomise_seed,
        phantom_lesion_appearances=not args.plain_lesions, dataset_id=args.dataset_id, dataset_name=args.dataset_name,
        test_fraction=args.test_fraction, split_seed=args.split_seed, cv_folds=args.cv_folds, configuration=args.configuration,
        patch_size=tuple(args.patch), features=tuple(args.features), batch_size=args.batch_size,
        target_spacing=tuple(args.target_spacing) if args.target_spacing else None, fold=args.fold,
        device=args.device, epochs=args.epochs, iterations_per_epoch=args.iterations,
        val_iterations=args.val_iterations, time_limit_min=args.time_limit, oversample_foreground=args.oversample,
        initial_lr=args.lr, continue_training=args.continue_training,
        init_weights=Path(args.init_weights) if args.init_weights else None, threads=args.threads, n_proc=args.processes, da_processes=args.da_processes,
        num_gpus=args.num_gpus,
        export_dir=Path(args.export) if args.export else None, zip_path=Path(args.zip) if args.zip else None,
        model_name=args.model_name, model_version=args.model_version, demo=args.demo,
        training_data=args.training_data, evaluate=not args.no_evaluate, eval_mode=args.eval_mode,
        card_note=args.card_note or "", command=args.card_command or command, check_only=args.check_only,
        skip_training=args.skip_training, overwrite=args.overwrite, allow_non_hu=args.allow_non_hu)
    bar = TextProgress()

    def say(msg: str) -> None:
        bar.close()
        bar._stage = None
        print(msg, flush=True)

    from engine.training.runner import children_die_with_parent, sigterm_interrupts
    children_die_with_parent()      # `kill -9` takes nnU-Net's worker processes with it
    try:
        with sigterm_interrupts():  # `kill PID` ends the run like Ctrl+C
            res = run_pipeline(opts, progress=bar, say=say)
    finally:
        bar.close()
        children_die_with_parent(False)
    if opts.check_only:
        return 0
    for set_name, md in res.markdown.items():
        print(f"\n## {set_name} set ({res.tables[set_name]['dir']})\n")
        print(md)
    return 0
