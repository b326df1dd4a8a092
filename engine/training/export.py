"""Package a trained nnU-Net model as a LiverPlan model folder and zip.

Package layout (what ``engine.models.install_model_zip`` installs and nnU-Net's predictor reads)::

    liverplan_model.json        the model card (see :func:`model_card`)
    dataset.json, plans.json    copied from nnU-Net's results folder
    fold_N/checkpoint_final.pth a slim checkpoint (weights only, names the stock nnUNetTrainer)

nnU-Net's own ``nnUNetv2_export_model_to_zip`` is not used: it fails when
``fold_N/validation/summary.json`` is missing, i.e. whenever the final validation was skipped (the CPU
case), and it would ship the optimiser state.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import zipfile
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ExportError, ModelError
from ..io.atomic import atomic_path, write_text_atomic
from ..labels import BY_KEY
from .runner import latest_checkpoint, slim_checkpoint

log = logging.getLogger(__name__)

CARD_NAME = "liverplan_model.json"


def model_card(name: str, version: str, dataset_json: dict, training_data: str, command: str,
               demo: bool = False, configuration: str = "", folds: Sequence[int] = (0,),
               extra: Optional[dict] = None) -> dict:
    """The model card: what the app shows about a model before anyone trusts its output.

    labels: {label value (str): structure key} from dataset.json, mapped to LiverPlan's structures by
    name (engine.labels). ``not_for_clinical_use`` is True for every model LiverPlan trains: nobody has
    validated it clinically; a site that validates its own model may change the flag in its card.
    """
    import nnunetv2
    import torch

    labels = {str(v): k for k, v in dataset_json.get("labels", {}).items() if int(v) != 0}
    card = {
        "name": name,
        "version": version,
        "demo": bool(demo),
        "not_for_clinical_use": True,
        "training_data": training_data,
        "labels": labels,
        "label_names": {k: BY_KEY[v].name for k, v in labels.items() if v in BY_KEY},
        "trained_with": {"software": "LiverPlan", "nnunetv2": getattr(nnunetv2, "__version__", "2.8.1"),
                         "torch": torch.__version__, "configuration": configuration,
                         "folds": [int(f) for f in folds],
                         "date": _dt.date.today().isoformat()},
        "command": command,
    }
    if demo:
        card["description"] = "demo — trained on synthetic phantoms — not for clinical use"
    if extra:
        card.update(extra)
    return card


def export_model(results_folder: str | Path, out_dir: str | Path, card: dict, folds: Sequence[int] = (0,),
                 zip_path: Optional[str | Path] = None, overwrite: bool = False) -> Path:
    """Write the model package folder ``out_dir`` (and optionally a zip of it); returns ``out_dir``.

    results_folder: nnU-Net's ``Trainer__Plans__configuration`` folder. Each fold's newest checkpoint
    (final, else latest, else best) is slimmed into ``fold_N/checkpoint_final.pth``.
    """
    src, out = Path(results_folder), Path(out_dir)
    for f in ("dataset.json", "plans.json"):
        if not (src / f).is_file():
            raise ModelError(f"{src} has no {f}; it is not an nnU-Net training output folder.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} already exists and is not empty; choose another folder or allow overwriting.")
    out.mkdir(parents=True, exist_ok=True)
    for f in ("dataset.json", "plans.json"):
        write_text_atomic(out / f, (src / f).read_text(), overwrite=True)
    for fold in folds:
        ck = latest_checkpoint(src / f"fold_{fold}")
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        slim_checkpoint(ck, out / f"fold_{fold}" / "checkpoint_final.pth")
        log.info("fold %s: %s -> slim checkpoint", fold, ck.name)
    write_text_atomic(out / CARD_NAME, json.dumps(card, indent=2), overwrite=True)
    for p in out.rglob("*"):
        if p.is_file():
            p.chmod(0o644)   # temporary files are created private; a model package is meant to be shared
    if zip_path is not None:
        zip_folder(out, Path(zip_path), overwrite=overwrite)
    return out


def zip_folder(folder: Path, zip_path: Path, overwrite: bool = False) -> Path:
    """Zip a model folder (paths relative to it, no absolute or parent paths)."""
    with atomic_path(zip_path, overwrite=overwrite) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder).as_posix())
    return zip_path
