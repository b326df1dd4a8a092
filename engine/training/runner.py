"""Run nnU-Net's planning, preprocessing and training in-process, and package the result.

Call :func:`engine.training.env.configure_nnunet_environment` first (it sets the folders and worker
counts nnU-Net reads, some of them at import time). torch and nnunetv2 are imported inside functions.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError, ModelError
from ..io.atomic import atomic_path
from ..progress import CancelToken, ProgressCallback, no_progress
from .plans import SMALL_CONFIGURATION, SmallNetSpec, add_small_configuration, fit_patch_to

log = logging.getLogger(__name__)

PLANS = "nnUNetPlans"
TRAINER = "LiverPlanTrainer"


_CHILDREN_DIE_WITH_PARENT = False      # the fork hooks' switch
_FORK_HOOKS_INSTALLED = False


def children_die_with_parent(on: bool = True) -> bool:
    """While on, every process this one forks (nnU-Net's augmentation and preprocessing workers) is
    killed by the kernel when its parent dies — also by ``kill -9``, which leaves no chance to stop them
    in Python (they were left running, re-parented to PID 1). Linux only (prctl PR_SET_PDEATHSIG); returns
    whether it is in effect. Switch it off after the run (``on=False``): the signal comes when the forking
    THREAD ends, which would surprise code that forks from short-lived threads later in the process."""
    global _CHILDREN_DIE_WITH_PARENT, _FORK_HOOKS_INSTALLED
    import sys
    if not on:
        _CHILDREN_DIE_WITH_PARENT = False
        return False
    if not sys.platform.startswith("linux"):
        return False
    if not _FORK_HOOKS_INSTALLED:
        import ctypes
        import signal
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            prctl = libc.prctl
        except (OSError, AttributeError):
            return False
        forker = [0]

        def _before() -> None:
            forker[0] = os.getpid() if _CHILDREN_DIE_WITH_PARENT else 0   # the child gets a copy: its parent

        def _in_child() -> None:
            if forker[0]:
                prctl(1, int(signal.SIGKILL))          # 1 = PR_SET_PDEATHSIG
                if os.getppid() != forker[0]:          # the parent died before the call (or before we ran)
                    os._exit(1)

        os.register_at_fork(before=_before, after_in_child=_in_child)
        _FORK_HOOKS_INSTALLED = True
    _CHILDREN_DIE_WITH_PARENT = True
    return True


class sigterm_interrupts:
    """While active, SIGTERM (``kill PID``) ends the run like Ctrl+C (KeyboardInterrupt), so nnU-Net's
    workers are shut down too — in this process only. A forked worker inherits the handler; there the
    signal keeps its default meaning (the worker ends quietly): nnU-Net's process pools end their workers
    with SIGTERM when a step finishes; a worker raising KeyboardInterrupt inside the pool's queue lock printed
    a traceback and could leave the pool waiting forever (planning hung with several --processes)."""

    def __enter__(self) -> "sigterm_interrupts":
        import signal
        owner = os.getpid()

        def _terminate(signum, frame):
            if os.getpid() != owner:                 # a forked worker: die as SIGTERM would, silently
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            raise KeyboardInterrupt

        self._old = signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(self, *exc) -> None:
        import signal
        signal.signal(signal.SIGTERM, self._old)


def _n_proc() -> int:
    return max(1, int(os.environ.get("nnUNet_def_n_proc", "1")))


def plan_and_preprocess(dataset_id: int, spec: Optional[SmallNetSpec] = SmallNetSpec(),
                        target_spacing: Optional[Sequence[float]] = None, verify: bool = True,
                        progress: ProgressCallback = no_progress) -> dict:
    """nnU-Net fingerprint + plan + 3d_fullres preprocessing, then the small configuration.

    target_spacing: (z, y, x) mm to resample to instead of nnU-Net's choice (the cohort median).
    spec: the small configuration to add (its patch is clipped to the median preprocessed image size);
        None adds none. Returns the final plans dict.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    n = _n_proc()
    name = convert_id_to_dataset_name(dataset_id)
    progress("Planning (fingerprint)", 0, 3)
    extract_fingerprint_dataset(dataset_id, num_processes=n, check_dataset_integrity=verify, clean=True,
                                verbose=False, show_progress_bar=False)
    progress("Planning (experiment)", 1, 3)
    # nnU-Net's target spacing is in its own transposed axis order; the cohorts LiverPlan writes are
    # canonical (z, y, x) arrays whose NIfTI axes nnU-Net reads back as (z, y, x), so no transpose here.
    plan_experiment_dataset(dataset_id, ExperimentPlanner,
                            overwrite_target_spacing=tuple(target_spacing) if target_spacing else None)
    progress("Preprocessing", 2, 3)
    preprocess_dataset(dataset_id, PLANS, ("3d_fullres",), (n,), verbose=False, show_progress_bar=False)
    plans_path = Path(os.environ["nnUNet_preprocessed"]) / name / f"{PLANS}.json"
    plans = json.loads(plans_path.read_text())
    if spec is not None:
        median = plans["configurations"]["3d_fullres"].get("median_image_size_in_voxels")
        if median:
            spec = fit_patch_to(median, spec)
        plans = add_small_configuration(plans_path, spec)
    progress("Preprocessing", 3, 3)
    return plans


@dataclass
class TrainResult:
    output_folder: Path          # .../Trainer__Plans__config (the model folder)
    fold: int
    configuration: str
    epochs_done: int
    stopped_by: str
    seconds: float
    checkpoint: Path
    last_pseudo_dice: list = field(default_factory=list)


def train(dataset_id: int, configuration: str = SMALL_CONFIGURATION, fold: int = 0, device: str = "cpu",
          epochs: int = 100, iterations_per_epoch: int = 50, val_iterations: int = 5,
          time_limit_s: Optional[float] = None, continue_training: bool = False,
          oversample_foreground: float = 0.5, initial_lr: float = 1e-2, threads: Optional[int] = None,
          progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
          init_weights: Optional[Path] = None, num_gpus: int = 1) -> TrainResult:
    """Train one fold with :class:`LiverPlanTrainer`; resumable with ``continue_training``.

    num_gpus > 1: nnU-Net's own multi-GPU training (DDP, as ``nnUNetv2_train -num_gpus N``): one process
    per GPU (torch.multiprocessing.spawn, NCCL), each running the same trainer on ``cuda:rank``; nnU-Net's
    trainer splits the batch among them and averages the gradients. Progress and cancel do not cross into
    those processes (nnU-Net's log file and Ctrl+C do); ``time_limit_s`` is refused (each process would stop on
    its own clock). Needs ``num_gpus`` CUDA GPUs; not runnable on a CPU-only machine.

    device: "cuda", "cpu" or "mps". nnU-Net's final validation (minutes on the CPU) is not run; the
    held-out evaluation of :mod:`engine.training.evaluate` replaces it.
    init_weights: a checkpoint (nnU-Net's or a slim one) of the same configuration to start from: a new
        training phase (warm restart) — epoch 0, a fresh optimiser, learning-rate schedule and time budget —
        from those network weights. Not combinable with ``continue_training`` (which resumes the schedule).
    """
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("Training on 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
    if threads:
        torch.set_num_threads(int(threads))
    name = maybe_convert_to_dataset_name(dataset_id)
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    plans_file = pre / f"{PLANS}.json"
    if not plans_file.is_file():
        raise InputError(f"{name} has not been planned/preprocessed yet (no {plans_file}).")
    plans = load_json(str(plans_file))
    if configuration not in plans["configurations"]:
        raise InputError(f"The plans of {name} have no configuration '{configuration}'; available: "
                         f"{', '.join(plans['configurations'])}.")
    if init_weights is not None and continue_training:
        raise InputError("Starting from given weights (--init-weights) begins a new training phase; it cannot "
                         "be combined with --continue, which resumes the interrupted phase.")
    init_state = _read_network_weights(Path(init_weights)) if init_weights is not None else None
    plans["continue_training"] = continue_training
    dataset_json = load_json(str(pre / "dataset.json"))
    settings = {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                "epochs": epochs, "iterations_per_epoch": iterations_per_epoch, "val_iterations": val_iterations,
                "oversample_foreground": oversample_foreground, "initial_lr": initial_lr,
                "continue_training": continue_training,
                "init_weights": str(init_weights) if init_weights is not None else None}
    if num_gpus > 1:
        return _train_ddp(num_gpus, settings, time_limit_s)
    trainer = _make_trainer(settings, torch.device(device), time_limit_s, progress, cancel)
    _start_trainer(trainer, settings, init_state)
    out = Path(trainer.output_folder)
    t0 = time.monotonic()
    trainer.run_training()
    ckpt = out / "checkpoint_final.pth"
    if trainer.stopped_by == "cancel":
        from ..progress import Cancelled
        raise Cancelled("Training was cancelled; checkpoint_latest.pth keeps the last finished epoch "
                        "(resume with --continue).")
    dice = trainer.logger.get_value("dice_per_class_or_region", None) or [[]]
    return TrainResult(Path(trainer.output_folder_base), fold, configuration, trainer.current_epoch,
                       trainer.stopped_by, time.monotonic() - t0, ckpt, list(dice[-1]))


def _make_trainer(settings: dict, device, time_limit_s: Optional[float], progress, cancel):
    """A LiverPlanTrainer with the run's schedule (one per process: the DDP ranks build their own)."""
    from .nnunet_ext.liverplan_trainer import LiverPlanTrainer

    trainer = LiverPlanTrainer(plans=settings["plans"], configuration=settings["configuration"],
                               fold=settings["fold"], dataset_json=settings["dataset_json"], device=device)
    trainer.num_epochs = int(settings["epochs"])
    trainer.num_iterations_per_epoch = int(settings["iterations_per_epoch"])
    trainer.num_val_iterations_per_epoch = int(settings["val_iterations"])
    trainer.oversample_foreground_percent = float(settings["oversample_foreground"])
    trainer.initial_lr = float(settings["initial_lr"])
    trainer.time_limit_s = time_limit_s
    trainer.progress_callback = progress
    trainer.cancel = cancel
    return trainer


def _start_trainer(trainer, settings: dict, init_state: Optional[dict]) -> None:
    """Resume from the latest checkpoint (--continue) or load the first weights (--init-weights)."""
    out = Path(trainer.output_folder)
    init_weights = settings["init_weights"]
    if settings["continue_training"]:
        for ck in ("checkpoint_final.pth", "checkpoint_latest.pth"):
            if (out / ck).is_file():
                trainer.load_checkpoint(str(out / ck))
                log.info("continuing from %s (epoch %d)", out / ck, trainer.current_epoch)
                break
        else:
            log.warning("no checkpoint in %s to continue from; starting fresh", out)
    if init_state is not None:
        # Read before training starts, so init_weights may be this folder's own checkpoint_final.pth
        # (which the new phase overwrites).
        trainer.initialize()
        _load_network_weights(trainer.network, init_state, Path(init_weights))
        log.info("new training phase from the weights in %s", init_weights)


def check_ddp_gpus(num_gpus: int, device: str) -> None:
    """Refuse, in words, multi-GPU training where it cannot run (no CUDA, fewer GPUs than asked)."""
    if num_gpus <= 1:
        return
    if device not in ("auto", "cuda"):
        raise InputError(f"--num-gpus {num_gpus} trains on CUDA GPUs (nnU-Net's DDP); it cannot run on '{device}'.")
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < num_gpus:
        raise InputError(f"--num-gpus {num_gpus} asks for {num_gpus} CUDA GPUs, and this machine has {have}: "
                         "run it on the GPU server, or lower --num-gpus.")


def _ddp_rank(rank: int, world_size: int, settings: dict) -> None:
    """One DDP process (what nnU-Net's run_ddp does, with LiverPlan's trainer and schedule)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    try:
        torch.cuda.set_device(torch.device("cuda", rank))
        init_state = _read_network_weights(Path(settings["init_weights"])) if settings["init_weights"] else None
        trainer = _make_trainer(settings, torch.device("cuda", rank), None, no_progress, None)
        _start_trainer(trainer, settings, init_state)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
        trainer.run_training()
    finally:
        dist.destroy_process_group()


def _train_ddp(num_gpus: int, settings: dict, time_limit_s: Optional[float]) -> TrainResult:
    """nnU-Net's multi-GPU training: ``num_gpus`` processes joined by NCCL on this machine."""
    import torch.multiprocessing as mp

    if time_limit_s:
        raise InputError("A time limit cannot be combined with multi-GPU training; give a number of epochs.")
    check_ddp_gpus(num_gpus, "cuda")
    os.environ.setdefault("MASTER_ADDR", "localhost")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:                     # a free port for the ranks' rendezvous (local only)
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    plans, cfg, fold = settings["plans"], settings["configuration"], settings["fold"]
    out = Path(os.environ["nnUNet_results"]) / plans["dataset_name"] / f"{TRAINER}__{plans['plans_name']}__{cfg}"
    t0 = time.monotonic()
    mp.spawn(_ddp_rank, args=(num_gpus, settings), nprocs=num_gpus, join=True)
    fold_dir = out / f"fold_{fold}"
    ckpt = fold_dir / "checkpoint_final.pth"
    epochs_done, dice = 0, []
    if ckpt.is_file():
        from ..models import load_checkpoint
        state = load_checkpoint(ckpt)
        epochs_done = int(state.get("current_epoch", 0))
        dice = list((state.get("logging", {}).get("dice_per_class_or_region") or [[]])[-1])
    return TrainResult(out, fold, cfg, epochs_done, "epochs", time.monotonic() - t0, ckpt, dice)


def _read_network_weights(path: Path) -> dict:
    """The ``network_weights`` state dict of an nnU-Net (or slim LiverPlan) checkpoint file."""
    import torch

    if not path.is_file():
        raise InputError(f"The checkpoint to start from, {path}, does not exist.")
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same plain message
        raise InputError(f"{path} could not be read as an nnU-Net checkpoint ({err}).") from err
    weights = ck.get("network_weights") if isinstance(ck, dict) else None
    if not isinstance(weights, dict):
        raise InputError(f"{path} is not an nnU-Net checkpoint (it holds no network weights).")
    # nnU-Net saves a DDP-wrapped network with 'module.' prefixes; the network here is unwrapped.
    return {(k[7:] if k.startswith("module.") else k): v for k, v in weights.items()}


def _load_network_weights(network, state: dict, path: Path) -> None:
    """Load ``state`` into the (possibly torch.compile'd) network; a different architecture is refused."""
    net = getattr(network, "_orig_mod", network)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"The weights in {path} do not fit this configuration's network (another patch, "
                         f"feature list or label set?): {str(err).splitlines()[0]}") from err


def latest_checkpoint(fold_dir: Path) -> Path:
    """checkpoint_final.pth, else checkpoint_latest.pth, else checkpoint_best.pth of a fold folder."""
    for ck in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (fold_dir / ck).is_file():
            return fold_dir / ck
    raise ModelError(f"{fold_dir} holds no nnU-Net checkpoint (checkpoint_final/latest/best.pth).")


def slim_checkpoint(src: Path, dst: Path) -> Path:
    """A checkpoint for inference only: weights (float32), no optimiser, naming the stock nnUNetTrainer.

    nnU-Net's predictor instantiates the trainer class named in the checkpoint to rebuild the network;
    naming the stock class makes the model usable without LiverPlan's trainer on the path. Only plain
    Python types are stored so it loads with ``torch.load(weights_only=True)``.
    """
    import torch

    ck = torch.load(str(src), map_location="cpu", weights_only=False)
    init = ck.get("init_args", {})
    slim = {
        # Keep the tensors themselves: nnU-Net's state dict names shared parameters several times
        # (conv.weight / all_modules.0.weight, decoder.encoder.*), and torch.save stores a shared storage
        # once; copying each entry would triple the file.
        "network_weights": {k: (v if v.dtype == torch.float32 else v.float())
                            for k, v in ck["network_weights"].items()},
        "trainer_name": "nnUNetTrainer",
        "init_args": {"plans": init.get("plans"), "configuration": init.get("configuration"),
                      "fold": init.get("fold"), "dataset_json": init.get("dataset_json"), "device": "cpu"},
        "inference_allowed_mirroring_axes": list(ck.get("inference_allowed_mirroring_axes") or []) or None,
        "current_epoch": int(ck.get("current_epoch", 0)),
    }
    mirror = ck.get("inference_allowed_mirroring_axes")
    slim["inference_allowed_mirroring_axes"] = tuple(int(a) for a in mirror) if mirror is not None else None
    with atomic_path(dst, overwrite=True) as tmp:
        torch.save(slim, str(tmp))
    return dst


def copy_into(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
