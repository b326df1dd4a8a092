"""The environment nnU-Net reads, set explicitly for one training run.

nnU-Net v2 takes its three folders from ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` and
its worker counts from ``nnUNet_def_n_proc`` / ``nnUNet_n_proc_DA``. ``nnUNet_def_n_proc`` is read once,
when ``nnunetv2.configuration`` is first imported, so :func:`configure_nnunet_environment` must run
before any nnunetv2 import (this package imports nnunetv2 only inside functions, after calling it).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Folder holding :mod:`engine.training.trainers`; nnU-Net's own command-line tools find LiverPlan's
#: trainer classes through ``nnUNet_extTrainer`` pointing here.
TRAINER_DIR = Path(__file__).resolve().parent / "nnunet_ext"


@dataclass(frozen=True)
class WorkDirs:
    """The three nnU-Net folders below one work folder (all created on demand)."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def create(self) -> "WorkDirs":
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        return self


def configure_nnunet_environment(work_dir: str | os.PathLike, n_proc: int = 1,
                                 n_proc_da: int | None = None, threads: int | None = None) -> WorkDirs:
    """Point nnU-Net at ``work_dir`` and set its worker counts for this process (and its children).

    n_proc: worker processes for fingerprinting/preprocessing/export (``nnUNet_def_n_proc``).
    n_proc_da: data-augmentation worker processes during training (``nnUNet_n_proc_DA``); None leaves
        nnU-Net's choice. 0 runs augmentation in the training process (fine for training, but nnU-Net's
        planning crashes with it, so it is only set by :func:`engine.training.runner.train`).
    threads: torch/OpenMP threads (None: leave as is).
    """
    dirs = WorkDirs(Path(work_dir).resolve()).create()
    os.environ["nnUNet_raw"] = str(dirs.raw)
    os.environ["nnUNet_preprocessed"] = str(dirs.preprocessed)
    os.environ["nnUNet_results"] = str(dirs.results)
    os.environ["nnUNet_def_n_proc"] = str(max(1, int(n_proc)))
    os.environ["nnUNet_extTrainer"] = str(TRAINER_DIR)
    if n_proc_da is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(n_proc_da))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
        if "torch" in sys.modules:
            import torch
            torch.set_num_threads(int(threads))
    if "nnunetv2.configuration" in sys.modules:
        # Already imported: patch the module constant so preprocessing honours the worker count.
        sys.modules["nnunetv2.configuration"].default_num_processes = max(1, int(n_proc))
    log.info("nnU-Net folders under %s", dirs.root)
    return dirs
