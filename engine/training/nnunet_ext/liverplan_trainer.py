"""nnU-Net trainer for LiverPlan: short schedules, a wall-clock budget, progress callbacks.

Differences from the stock ``nnUNetTrainer`` (everything else — loss, augmentation, optimiser, deep
supervision — is nnU-Net's):

* ``num_epochs`` / ``num_iterations_per_epoch`` / ``num_val_iterations_per_epoch`` /
  ``oversample_foreground_percent`` / ``save_every`` / ``initial_lr`` come from ``LIVERPLAN_*``
  environment variables (so nnU-Net's own ``nnUNetv2_train -tr LiverPlanTrainer`` honours them too) or
  are set as attributes before :meth:`run_training`.
* ``time_limit_s``: a training-time budget. The polynomial learning-rate decay follows whichever is
  further along, epochs or the budget, and training stops (saving ``checkpoint_final.pth``) once the
  budget is spent, also inside an epoch. The time counted is wall-clock time of the finished epochs
  plus the checkpointing between them (a pause longer than two minutes, as when a run is resumed later,
  is not counted), taken from the epoch timestamps checkpoints carry, so it survives ``--continue``.
* nnU-Net redraws ``progress.png`` after every epoch (~0.5 s of matplotlib; 10 % of a GPU epoch of the
  demo network); here at most every ``PLOT_EVERY_S`` seconds and once at the end.
* ``progress_callback(stage, done, total)`` is called after every iteration (engine.progress style);
  ``cancel`` (engine.progress.CancelToken) stops at the next iteration after saving checkpoint_latest.
* ``checkpoint_latest.pth`` is written every ``save_every`` epochs including the last one, so an
  interrupted run always leaves a usable, resumable checkpoint.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


#: a gap between two epochs longer than this is a pause (a resumed run), not checkpointing time
PAUSE_S = 120.0
#: progress.png is redrawn at most this often
PLOT_EVERY_S = 30.0


def budget_seconds(starts, ends) -> float:
    """Training time spent by the epochs logged with these start/end timestamps: each finished epoch's
    duration plus the gap before the next epoch's start (checkpointing, plotting), unless that gap is a
    pause of over ``PAUSE_S``. A started, unfinished epoch counts only its gap."""
    total = 0.0
    for i, (s, e) in enumerate(zip(starts, ends)):
        total += max(0.0, e - s)
        if i + 1 < len(starts):
            gap = starts[i + 1] - e
            if 0.0 < gap <= PAUSE_S:
                total += gap
    return float(total)


def _env(name: str, default, cast):
    v = os.environ.get(name)
    return cast(v) if v not in (None, "") else default


class LiverPlanTrainer(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env("LIVERPLAN_NUM_EPOCHS", 100, int)
        self.num_iterations_per_epoch = _env("LIVERPLAN_ITERS_PER_EPOCH", 50, int)
        self.num_val_iterations_per_epoch = _env("LIVERPLAN_VAL_ITERS", 5, int)
        self.oversample_foreground_percent = _env("LIVERPLAN_OVERSAMPLE", 0.5, float)
        self.save_every = _env("LIVERPLAN_SAVE_EVERY", 1, int)
        self.initial_lr = _env("LIVERPLAN_INITIAL_LR", 1e-2, float)
        self.time_limit_s: Optional[float] = _env("LIVERPLAN_TIME_LIMIT_S", None, float)
        self.progress_callback: Optional[Callable[[str, int, int], None]] = None
        self.cancel = None
        self.stopped_by = "epochs"
        self._last_plot = 0.0

    # --- time accounting ------------------------------------------------------------------------
    def trained_seconds(self) -> float:
        """Seconds spent in finished epochs and the checkpointing between them (from nnU-Net's logger,
        which checkpoints carry): see :func:`budget_seconds`."""
        starts = self.logger.get_value("epoch_start_timestamps", None) or []
        ends = self.logger.get_value("epoch_end_timestamps", None) or []
        return budget_seconds(starts, ends)

    def _schedule_fraction(self) -> float:
        frac = self.current_epoch / max(1, self.num_epochs)
        if self.time_limit_s:
            frac = max(frac, self.trained_seconds() / self.time_limit_s)
        return min(frac, 0.999)

    def on_train_epoch_start(self):
        self.network.train()
        # Polynomial decay (nnU-Net's exponent 0.9) over epochs or the time budget, whichever is later.
        lr = self.initial_lr * (1 - self._schedule_fraction()) ** 0.9
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.print_to_log_file("")
        self.print_to_log_file(f"Epoch {self.current_epoch}")
        self.print_to_log_file(f"Current learning rate: {np.round(lr, decimals=5)}")
        self.logger.log("lrs", lr, self.current_epoch)

    def on_epoch_end(self):
        now = time.time()
        if now - self._last_plot < PLOT_EVERY_S:
            # an instance attribute shadows MetaLogger.plot_progress_png for this one epoch
            self.logger.plot_progress_png = lambda *_a, **_k: None
        else:
            self._last_plot = now
        try:
            super().on_epoch_end()
        finally:
            self.logger.__dict__.pop("plot_progress_png", None)
        # nnU-Net skips checkpoint_latest on its last epoch and every non-multiple of save_every; we
        # want the newest weights on disk after every epoch of a short run.
        done = self.current_epoch  # already incremented
        if done % max(1, self.save_every) != 0 or done == self.num_epochs:
            self.current_epoch -= 1
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
            self.current_epoch += 1

    def _time_bound(self) -> bool:
        """True when the time budget, not the epoch count, will end this run, judged from the pace of the
        finished epochs (before the first one ends the pace is unknown and the budget is assumed)."""
        done = self.current_epoch
        if done == 0:
            return True
        per_epoch = self.trained_seconds() / done
        return per_epoch * self.num_epochs > self.time_limit_s

    def _out_of_time(self) -> bool:
        return bool(self.time_limit_s) and self.trained_seconds() >= self.time_limit_s

    def run_training(self):
        self.on_train_start()
        total_iters = self.num_epochs * self.num_iterations_per_epoch
        while self.current_epoch < self.num_epochs:
            if self._out_of_time():
                self.stopped_by = "time limit"
                self.print_to_log_file(f"Training-time budget of {self.time_limit_s:.0f} s spent; stopping.")
                break
            epoch_t0 = time.time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for it in range(self.num_iterations_per_epoch):
                if self.cancel is not None and self.cancel.cancelled:
                    break
                if it > 0 and self.time_limit_s and \
                        self.trained_seconds() + (time.time() - epoch_t0) >= self.time_limit_s:
                    # The budget ends inside an epoch (on a CPU one epoch can take many minutes): the epoch
                    # closes with the iterations done so far, then validation and checkpoint as usual.
                    break
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                if self.progress_callback is not None:
                    if self.time_limit_s and self._time_bound():
                        # A time-limited run ends on its budget, not after epochs x iterations: report
                        # seconds of the budget, so the bar and its "time left" mean something.
                        spent = self.trained_seconds() + (time.time() - epoch_t0)
                        self.progress_callback("Training (seconds of the time budget)",
                                               int(min(spent, self.time_limit_s)), int(self.time_limit_s))
                    else:
                        self.progress_callback("Training", self.current_epoch * self.num_iterations_per_epoch
                                               + it + 1, total_iters)
            if self.cancel is not None and self.cancel.cancelled:
                self.stopped_by = "cancel"
                break
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        if self.stopped_by == "cancel":
            self._shutdown_dataloaders()
            return
        if self.local_rank == 0 and self._last_plot:
            self.logger.plot_progress_png(self.output_folder)   # the epochs since the last throttled plot
        self.on_train_end()

    def _shutdown_dataloaders(self):
        for dl in (self.dataloader_train, self.dataloader_val):
            if dl is not None and hasattr(dl, "_finish"):
                dl._finish()
