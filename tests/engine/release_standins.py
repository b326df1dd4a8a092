"""Stand-ins for the public releases LiverPlan recognises: each release's exact folder layout (dataset folder,
trainer, plans and configuration names), labels and image reader, with a tiny random network built by
nnU-Net's own code (tests/engine/tiny_model.py). No weights of the real releases are used or downloaded.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from tiny_model import TEST_SPACING, build_tiny_model

REORIENT = "NibabelIOWithReorient"


def _labels(names_by_value: dict[int, str]) -> dict[str, int]:
    out = {"background": 0}
    out.update({n: v for v, n in sorted(names_by_value.items())})
    return out


# part1 organs (Dataset291): liver is 5 among 24 organs; the first ones as TotalSegmentator lists them
ORGANS = _labels({1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
                  7: "pancreas", 8: "adrenal_gland_right"})
# part3 cardiac (Dataset293): inferior_vena_cava 13, portal_vein_and_splenic_vein 14
CARDIAC = _labels({1: "heart", 2: "aorta", 3: "pulmonary_vein", 4: "brachiocephalic_trunk", 12: "superior_vena_cava",
                   13: "inferior_vena_cava", 14: "portal_vein_and_splenic_vein", 15: "iliac_artery_left"})
LIVER_VESSELS = _labels({1: "liver_vessels", 2: "liver_tumor"})
MSD_VESSEL = _labels({1: "Vessel", 2: "Tumour"})
SEGMENTS = _labels({i: f"liver_segment_{i}" for i in range(1, 9)})
LESIONS = _labels({1: "liver_lesions"})

#: key -> (dataset folder, trainer, configuration, labels, reader, extra dataset.json entries)
STANDINS = {
    "ts_organs": ("Dataset291_TotalSegmentator_part1_organs_1559subj", "nnUNetTrainerNoMirroring", "3d_fullres",
                  ORGANS, REORIENT, {"name": "TotalSegmentator", "release": "2.0"}),
    "ts_cardiac": ("Dataset293_TotalSegmentator_part3_cardiac_1559subj", "nnUNetTrainerNoMirroring", "3d_fullres",
                   CARDIAC, REORIENT, {"name": "TotalSegmentator", "release": "2.0"}),
    "ts_total_3mm": ("Dataset297_TotalSegmentator_total_3mm_1559subj", "nnUNetTrainer_4000epochs_NoMirroring",
                     "3d_fullres", _labels({5: "liver", 63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein"}),
                     REORIENT, {"name": "TotalSegmentator", "release": "2.0"}),
    "ts_liver_vessels": ("Dataset008_HepaticVessel", "nnUNetTrainer", "3d_fullres", LIVER_VESSELS, REORIENT, {}),
    "ts_liver_segments": ("Dataset570_ct_liver_segments", "nnUNetTrainerNoMirroring", "3d_fullres", SEGMENTS,
                          REORIENT, {}),
    "ts_liver_lesions": ("Dataset591_ct_liver_lesions_842subj", "nnUNetTrainer", "3d_fullres_high", LESIONS,
                         REORIENT, {}),
    "msd_vessel": ("Dataset008_HepaticVessel", "nnUNetTrainer", "3d_fullres", MSD_VESSEL, None,
                   {"name": "HepaticVessel", "licence": "CC-BY-SA 4.0", "reference": "Memorial Sloan Kettering"}),
}


def build_standin(root: Path, key: str, seed: int = 0, configuration: str | None = None) -> Path:
    ds, trainer, conf, labels, reader, extra = STANDINS[key]
    return build_tiny_model(root / key, labels=labels, spacing=TEST_SPACING, seed=seed,
                            configuration=configuration or conf, trainer_name=trainer, dataset_name=ds,
                            reader=reader, dataset_json_extra=extra, mirror_axes=None if "NoMirroring" in trainer
                            else (0, 1, 2))


def zip_release(folder: Path, zpath: Path) -> Path:
    """A release zip as TotalSegmentator publishes them: <Dataset...>/<Trainer>__<Plans>__<config>/..."""
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.parent.name}/{folder.name}/{f.relative_to(folder).as_posix()}")
    return zpath
