"""nnU-Net's training curves (what its progress.png shows), read back for the training report.

nnunetv2 2.8.1 records, per epoch, in its LocalLogger (``nnunetv2/training/logging/nnunet_logger.py``):
``train_losses``, ``val_losses`` (Dice + cross-entropy, so negative when good), ``mean_fg_dice`` (the
"pseudo Dice": Dice of the foreground classes pooled over the validation iterations' patches),
``ema_fg_dice`` (its exponential moving average, 0.9 / 0.1, which picks checkpoint_best), ``dice_per_class_or_region``,
``lrs`` and the epoch timestamps. The lists are saved in every checkpoint under ``"logging"``; the same
numbers are printed to ``training_log_*.txt`` ("train_loss -0.53", "val_loss -0.61", "Pseudo dice [0.9, ...]").
The checkpoint is read first (exact values; loaded weights-only, never unpickling code), the text log
otherwise (e.g. when only the log was kept).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TrainingCurves:
    """Per-epoch values (index = epoch, starting at 0); NaN where an epoch lacks a value."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    pseudo_dice: list[float] = field(default_factory=list)        # mean foreground pseudo Dice
    pseudo_dice_ema: list[float] = field(default_factory=list)
    dice_per_class: list[list[float]] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    source: str = ""

    @property
    def epochs(self) -> int:
        return max(len(self.train_loss), len(self.val_loss), len(self.pseudo_dice))


def _floats(v) -> list[float]:
    out = []
    for x in v or []:
        try:
            out.append(float(x))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def from_logging_dict(d: dict, source: str = "") -> TrainingCurves:
    """Curves from nnU-Net's logger dict (``checkpoint["logging"]``)."""
    c = TrainingCurves(_floats(d.get("train_losses")), _floats(d.get("val_losses")), _floats(d.get("mean_fg_dice")),
                       _floats(d.get("ema_fg_dice")), [_floats(x) for x in d.get("dice_per_class_or_region") or []],
                       _floats(d.get("lrs")), source=source)
    st, en = _floats(d.get("epoch_start_timestamps")), _floats(d.get("epoch_end_timestamps"))
    c.epoch_seconds = [e - s for s, e in zip(st, en)]
    return c


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan"


def parse_training_log(text: str, source: str = "") -> TrainingCurves:
    """Curves from nnU-Net's ``training_log_*.txt`` text."""
    c = TrainingCurves(source=source)
    epoch = -1
    cur: dict = {}

    def flush():
        if epoch >= 0:
            for name, lst in (("train", c.train_loss), ("val", c.val_loss), ("dice", c.pseudo_dice)):
                lst.append(cur.get(name, float("nan")))
            c.dice_per_class.append(cur.get("classes", []))
            c.learning_rate.append(cur.get("lr", float("nan")))
            c.epoch_seconds.append(cur.get("sec", float("nan")))

    for line in text.splitlines():
        msg = line.split(": ", 1)[1] if re.match(r"^\d{4}-\d\d-\d\d", line) and ": " in line else line
        msg = msg.strip()
        m = re.match(r"^Epoch (\d+)$", msg)
        if m:
            flush()
            epoch, cur = int(m.group(1)), {}
            continue
        if msg.startswith("train_loss"):
            cur["train"] = float(re.findall(_NUM, msg[len("train_loss"):])[0])
        elif msg.startswith("val_loss"):
            cur["val"] = float(re.findall(_NUM, msg[len("val_loss"):])[0])
        elif msg.startswith("Pseudo dice"):
            # "[np.float32(0.91), np.float32(0.4)]" or "[0.91, 0.4]": the numbers inside the brackets
            inner = msg[msg.find("["):]
            vals = [float(x) for x in re.findall(r"(?<![\w.])(" + _NUM + r")(?![\w.])", re.sub(r"np\.float\d+", "",
                                                                                               inner))]
            cur["classes"] = vals
            cur["dice"] = float(np.nanmean(vals)) if vals else float("nan")
        elif msg.startswith("Current learning rate"):
            cur["lr"] = float(re.findall(_NUM, msg.split(":", 1)[-1])[0])
        elif msg.startswith("Epoch time"):
            cur["sec"] = float(re.findall(_NUM, msg)[0])
    flush()
    ema: list[float] = []
    for v in c.pseudo_dice:     # nnU-Net's own rule (MetaLogger.log): ema = 0.9 * previous + 0.1 * new
        ema.append(v if not ema or math.isnan(ema[-1]) else 0.9 * ema[-1] + 0.1 * v)
    c.pseudo_dice_ema = ema
    return c


def read_training_curves(fold_dir: Union[str, Path]) -> Optional[TrainingCurves]:
    """The curves of an nnU-Net fold folder (checkpoint first, else the newest training log); None if none."""
    d = Path(fold_dir)
    for ck in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        p = d / ck
        if not p.is_file():
            continue
        try:
            from ..models import load_checkpoint
            logging_dict = load_checkpoint(p).get("logging")
            if isinstance(logging_dict, dict) and logging_dict.get("train_losses"):
                return from_logging_dict(logging_dict, source=str(p))
        except Exception as err:  # noqa: BLE001 - fall back to the text log
            log.warning("training curves: %s could not be read (%s); trying the text log", p, err)
    logs = sorted(d.glob("training_log_*.txt"))
    if logs:
        curves = parse_training_log(logs[-1].read_text(encoding="utf-8", errors="replace"), source=str(logs[-1]))
        if curves.epochs:
            return curves
    return None


def curves_blocks(curves: TrainingCurves, data=None, level: int = 1) -> list:
    """The report section: loss and pseudo-Dice per epoch, as nnU-Net's progress.png draws them."""
    from ..reporting.document import Figure, Heading, Paragraph
    from ..reporting.plots import figure_svg, new_figure, style

    if data is not None:
        data.training = curves
    if curves is None or not curves.epochs:
        return [Heading("Training curves", level), Paragraph("No training record was found.", "note")]
    with style():
        fig = new_figure(7.0, 2.5)
        a1, a2 = fig.subplots(1, 2)
        ep = np.arange(curves.epochs)
        for vals, lab, ls in ((curves.train_loss, "training loss", "-"), (curves.val_loss, "validation loss", "--")):
            if vals:
                a1.plot(ep[: len(vals)], vals, color="black", linestyle=ls, linewidth=1.1, label=lab)
        a1.set_xlabel("epoch")
        a1.set_ylabel("loss (Dice + cross-entropy)")
        a1.legend(loc="upper right")
        a1.set_title("Loss", loc="left")
        if curves.pseudo_dice:
            a2.plot(ep[: len(curves.pseudo_dice)], curves.pseudo_dice, color="#555", linestyle=":", marker=".",
                    markersize=3, linewidth=0.8, label="pseudo Dice")
        if curves.pseudo_dice_ema:
            a2.plot(ep[: len(curves.pseudo_dice_ema)], curves.pseudo_dice_ema, color="black", linewidth=1.3,
                    label="pseudo Dice (moving average)")
        a2.set_ylim(0, 1)
        a2.set_xlabel("epoch")
        a2.set_ylabel("pseudo Dice (foreground)")
        a2.legend(loc="lower right")
        a2.set_title("Pseudo Dice", loc="left")
    last = curves.epochs - 1
    txt = (f"{curves.epochs} epoch(s). Last epoch: training loss {_g(curves.train_loss, last)}, validation loss "
           f"{_g(curves.val_loss, last)}, pseudo Dice {_g(curves.pseudo_dice, last)}.")
    return [Heading("Training curves", level), Paragraph(txt),
            Figure(figure_svg(fig), "nnU-Net's per-epoch record (the data of its progress.png). Pseudo Dice: Dice "
                                    "of the foreground classes over the validation patches of each epoch, not a "
                                    "per-case score. Source: " + curves.source, alt="training curves")]


def _g(vals: list[float], i: int) -> str:
    return f"{vals[i]:.4f}" if i < len(vals) and math.isfinite(vals[i]) else "–"
