"""Write a cohort as an nnU-Net v2 raw dataset with the study's seeded 80/20 split.

Layout written under ``<nnUNet_raw>/DatasetXXX_Name/``::

    dataset.json              five named labels, one CT channel, file ending .nii.gz
    imagesTr/<id>_0000.nii.gz labelsTr/<id>.nii.gz      every train AND held-out test case
    imagesTs/<id>_0000.nii.gz labelsTs/<id>.nii.gz      the optional external validation set
    liverplan_split.json      which ids are train / test / external, the seed, the source of each case

and ``<nnUNet_preprocessed>/DatasetXXX_Name/splits_final.json`` with ONE fold (fold 0): the 80 % train
cases as nnU-Net's "train" and the 20 % held-out test cases as its "val". nnU-Net uses the val cases of
a fold only for its pseudo-Dice monitor and optional final validation; LiverPlan exports
``checkpoint_final.pth``, so the held-out cases never choose the weights and stay a fair test set.

Images and labels are written on the case's canonical (LPS) grid; nnU-Net reads geometry from the
NIfTI header, and LiverPlan's inference maps predictions back the same way.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..case import Case
from ..errors import InputError
from ..io.atomic import atomic_path, write_text_atomic
from ..labels import STRUCTURES
from ..progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

#: nnU-Net's label names: LiverPlan's structure keys, which engine.labels maps back by name.
NNUNET_LABELS: dict[str, int] = {"background": 0, **{s.key: s.label for s in STRUCTURES}}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass
class DatasetSplit:
    """Case ids of the study's split: ``train`` (nnU-Net fold 0 train), ``test`` (held out, fold 0 val),
    ``external`` (imagesTs, never seen in training)."""

    train: list[str]
    test: list[str]
    external: list[str] = field(default_factory=list)
    seed: int = 0
    test_fraction: float = 0.2

    def to_dict(self) -> dict:
        return {"train": self.train, "test": self.test, "external": self.external, "seed": self.seed,
                "test_fraction": self.test_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSplit":
        return cls(list(d["train"]), list(d["test"]), list(d.get("external", [])), int(d.get("seed", 0)),
                   float(d.get("test_fraction", 0.2)))


@dataclass
class DatasetInfo:
    dataset_id: int
    name: str              # DatasetXXX_Name
    raw_dir: Path
    preprocessed_dir: Path
    split: DatasetSplit


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_Name`` (XXX three digits, 1-999)."""
    if not 1 <= int(dataset_id) <= 999:
        raise InputError(f"An nnU-Net dataset id must be between 1 and 999; {dataset_id} is not.")
    if not re.match(r"^[A-Za-z0-9_\-]+$", name):
        raise InputError(f"The dataset name '{name}' may contain only letters, digits, '-' and '_'.")
    return f"Dataset{int(dataset_id):03d}_{name}"


def seeded_split(case_ids: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """The study's random train/test split, reproducible from ``seed``.

    Returns (train, test), each sorted. At least one case goes to each side when there are two or more.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise InputError(f"A train/test split needs at least 2 cases; the cohort has {len(ids)}.")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"The test fraction must lie between 0 and 1; {test_fraction} does not.")
    n_test = min(len(ids) - 1, max(1, int(round(len(ids) * test_fraction))))
    order = np.random.default_rng(seed).permutation(len(ids))
    test = sorted(ids[i] for i in order[:n_test])
    train = sorted(ids[i] for i in order[n_test:])
    return train, test


def _write_nifti(path: Path, image_sitk, overwrite: bool) -> None:
    import SimpleITK as sitk

    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(image_sitk, str(tmp), useCompression=True)


def write_case_files(case: Case, case_id: str, images_dir: Path, labels_dir: Optional[Path],
                     overwrite: bool = True) -> None:
    """Write one case's CT as ``<id>_0000.nii.gz`` and its label map as ``<id>.nii.gz`` (canonical grid)."""
    import SimpleITK as sitk

    img = case.image_sitk(canonical=True)
    if img.GetPixelID() not in (sitk.sitkInt16, sitk.sitkFloat32):
        img = sitk.Cast(img, sitk.sitkFloat32)
    _write_nifti(images_dir / f"{case_id}_0000.nii.gz", img, overwrite)
    if labels_dir is not None:
        lab = case.labels_sitk(canonical=True)
        _write_nifti(labels_dir / f"{case_id}.nii.gz", sitk.Cast(lab, sitk.sitkUInt8), overwrite)


CaseSource = Iterable[tuple[str, Callable[[], Case] | Case]]


def write_nnunet_dataset(raw_root: str | Path, preprocessed_root: str | Path, dataset_id: int, name: str,
                         cases: CaseSource, external: Optional[CaseSource] = None,
                         test_fraction: float = 0.2, seed: int = 0, description: str = "", cv_folds: int = 1,
                         provenance: Optional[dict] = None, overwrite: bool = False,
                         progress: ProgressCallback = no_progress,
                         cancel: Optional[CancelToken] = None) -> DatasetInfo:
    """Write an nnU-Net v2 raw dataset plus the seeded split file; return where it went.

    cases / external: (case_id, Case or a zero-argument loader returning a Case) pairs; loaders keep
    only one CT in memory at a time. Labels must already be LiverPlan's 0-5 (see engine.labels).
    overwrite: replace an existing dataset folder of the same name (otherwise InputError).
    cv_folds: 1 = nnU-Net fold 0 is the study's 80/20 split; k > 1 = k-fold CV inside the 80 %.
    """
    raw_root, preprocessed_root = Path(raw_root), Path(preprocessed_root)
    folder = dataset_folder_name(dataset_id, name)
    raw_dir = raw_root / folder
    existing = [p for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p.is_dir()]
    if existing and not overwrite:
        raise InputError(f"An nnU-Net dataset with id {dataset_id} already exists ({existing[0]}); choose "
                         "another id or allow overwriting.")
    if existing and overwrite:
        import shutil
        for p in existing:
            shutil.rmtree(p)
        for p in preprocessed_root.glob(f"Dataset{int(dataset_id):03d}_*"):
            shutil.rmtree(p)
    cases = list(cases)
    external = list(external or [])
    ids = [cid for cid, _ in cases]
    ext_ids = [cid for cid, _ in external]
    for cid in ids + ext_ids:
        if not _ID_RE.match(cid):
            raise InputError(f"The case id '{cid}' cannot be a file name: use letters, digits, '-' and '_'.")
    dup = sorted({c for c in ids + ext_ids if (ids + ext_ids).count(c) > 1})
    if dup:
        raise InputError(f"These case ids appear more than once: {', '.join(dup)}. Every case needs its own id.")
    train, test = seeded_split(ids, test_fraction, seed)
    split = DatasetSplit(train=train, test=test, external=sorted(ext_ids), seed=seed, test_fraction=test_fraction)

    images_tr, labels_tr = raw_dir / "imagesTr", raw_dir / "labelsTr"
    images_ts, labels_ts = raw_dir / "imagesTs", raw_dir / "labelsTs"
    for p in (images_tr, labels_tr) + ((images_ts, labels_ts) if external else ()):
        p.mkdir(parents=True, exist_ok=True)
    total = len(cases) + len(external)
    done = 0
    sources: dict[str, str] = {}
    for group, (idir, ldir) in ((cases, (images_tr, labels_tr)), (external, (images_ts, labels_ts))):
        for cid, src in group:
            check(cancel)
            progress("Writing nnU-Net dataset", done, total)
            case = src() if callable(src) else src
            bad = case.unknown_label_values()
            if bad:
                raise InputError(f"Case {cid} has label values {bad} that are none of LiverPlan's five "
                                 "structures (1-5); map them with a label-map file first.")
            write_case_files(case, cid, idir, ldir, overwrite=True)
            sources[cid] = str(getattr(case.provenance, "source", "") or case.name)
            done += 1
    progress("Writing nnU-Net dataset", total, total)

    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": dict(NNUNET_LABELS),
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": name,
        "description": description or "LiverPlan cohort: portal-phase CT with five-structure references",
        "liverplan": {"split": split.to_dict(), "provenance": provenance or {}},
    }
    write_text_atomic(raw_dir / "dataset.json", json.dumps(dataset_json, indent=2), overwrite=True)
    write_text_atomic(raw_dir / "liverplan_split.json",
                      json.dumps({**split.to_dict(), "sources": sources}, indent=2), overwrite=True)
    pre_dir = preprocessed_root / folder
    write_splits_final(pre_dir, split, cv_folds)
    log.info("wrote %s: %d train, %d test, %d external", raw_dir, len(train), len(test), len(ext_ids))
    return DatasetInfo(int(dataset_id), folder, raw_dir, pre_dir, split)


def nnunet_folds(split: DatasetSplit, cv_folds: int = 1) -> list[dict]:
    """The folds of ``splits_final.json``.

    cv_folds = 1: one fold, train = the study's train set, val = its held-out test set.
    cv_folds = k > 1: a seeded k-fold cross-validation over the TRAIN set only (as nnU-Net does by
    default); the held-out test cases appear in no fold, so no fold ever trains or validates on them.
    """
    if cv_folds <= 1:
        return [{"train": list(split.train), "val": list(split.test)}]
    if cv_folds > len(split.train):
        raise InputError(f"{cv_folds}-fold cross-validation needs at least {cv_folds} training cases; "
                         f"there are {len(split.train)}.")
    order = np.random.default_rng(split.seed + 1).permutation(len(split.train))
    parts = np.array_split(order, cv_folds)
    folds = []
    for k in range(cv_folds):
        val = sorted(split.train[i] for i in parts[k])
        folds.append({"train": sorted(c for c in split.train if c not in val), "val": val})
    return folds


def write_splits_final(preprocessed_dataset_dir: Path, split: DatasetSplit, cv_folds: int = 1) -> Path:
    """Write nnU-Net's ``splits_final.json`` (see :func:`nnunet_folds`)."""
    preprocessed_dataset_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(preprocessed_dataset_dir / "splits_final.json",
                             json.dumps(nnunet_folds(split, cv_folds), indent=2), overwrite=True)


def read_split(raw_dataset_dir: Path) -> DatasetSplit:
    p = Path(raw_dataset_dir) / "liverplan_split.json"
    if not p.is_file():
        raise InputError(f"{raw_dataset_dir} has no liverplan_split.json; it was not written by LiverPlan.")
    return DatasetSplit.from_dict(json.loads(p.read_text()))
