"""Training pipeline pieces that need no network: split, dataset writer, plans, cohort checks, card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.case import Case, Provenance
from engine.errors import InputError
from engine.geometry import Geometry
from engine.training.cohort import check_cohort, load_cohort
from engine.training.dataset import NNUNET_LABELS, seeded_split, write_nnunet_dataset
from engine.training.plans import SmallNetSpec, add_small_configuration, fit_patch_to, small_configuration


def _case(shape=(8, 12, 12), labels=(1, 2, 3, 4, 5), spacing=(2.0, 1.5, 1.5)) -> Case:
    lab = np.zeros(shape, np.uint8)
    for i, v in enumerate(labels):
        lab[1 + i % (shape[0] - 2), 2:6, 2 + i:3 + i] = v
    img = (lab.astype(np.int16) * 40 - 20).astype(np.int16)
    return Case(image=img, geometry=Geometry(shape=shape, spacing=spacing), labels=lab,
                provenance=Provenance(source_format="test"))


def _write_pair(folder: Path, cid: str, img_shape=(8, 12, 12), lab_shape=None, values=(1, 2, 3, 4, 5)):
    import SimpleITK as sitk

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "references").mkdir(parents=True, exist_ok=True)
    ct = np.random.default_rng(0).normal(40, 30, img_shape).astype(np.int16)
    ct[:, :, :2] = -1000   # air beside soft tissue: looks like a CT, not a label map
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(img, str(folder / "images" / f"{cid}.nii.gz"))
    lab = np.zeros(lab_shape or img_shape, np.uint8)
    for i, v in enumerate(values):
        lab[1, 1 + i, 1] = v
    limg = sitk.GetImageFromArray(lab)
    limg.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(limg, str(folder / "references" / f"{cid}.nii.gz"))


def _write_ircadb_masks(folder: Path) -> None:
    """An IRCADb-style folder of binary masks (venoussystem = hepatic veins + IVC) on _write_pair's grid."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    for i, name in enumerate(("liver", "portalvein", "venoussystem", "livertumor1")):
        m = np.zeros((8, 12, 12), np.uint8)
        m[1 + i, 2:6, 2:6] = 1
        img = sitk.GetImageFromArray(m)
        img.SetSpacing((1.5, 1.5, 2.0))
        sitk.WriteImage(img, str(folder / f"{name}.nii.gz"))


# --- split --------------------------------------------------------------------------------------
def test_seeded_split_is_80_20_reproducible_and_disjoint():
    ids = [f"c{i:02d}" for i in range(70)]
    tr, te = seeded_split(ids, 0.2, seed=3)
    assert (len(tr), len(te)) == (56, 14)
    assert set(tr).isdisjoint(te) and set(tr) | set(te) == set(ids)
    assert seeded_split(list(reversed(ids)), 0.2, seed=3) == (tr, te)   # order of input does not matter
    assert seeded_split(ids, 0.2, seed=4) != (tr, te)


def test_cross_validation_folds_never_touch_the_test_cases():
    from engine.training.dataset import DatasetSplit, nnunet_folds

    tr, te = seeded_split([f"c{i:02d}" for i in range(20)], 0.2, seed=0)
    folds = nnunet_folds(DatasetSplit(tr, te, seed=0), 5)
    assert len(folds) == 5
    assert sorted(c for f in folds for c in f["val"]) == tr            # every train case validated once
    for f in folds:
        assert set(f["train"]).isdisjoint(f["val"]) and set(f["train"] + f["val"]) == set(tr)
        assert set(te).isdisjoint(f["train"] + f["val"])
    assert nnunet_folds(DatasetSplit(tr, te), 1) == [{"train": tr, "val": te}]


def test_split_needs_two_cases():
    with pytest.raises(InputError, match="at least 2"):
        seeded_split(["a"], 0.2)


# --- dataset writer ----------------------------------------------------------------------------
def test_dataset_writer_layout(tmp_path):
    cases = [(f"p{i}", _case()) for i in range(5)]
    info = write_nnunet_dataset(tmp_path / "raw", tmp_path / "pre", 7, "Unit", cases,
                                external=[("x0", lambda: _case())], seed=1)
    raw = tmp_path / "raw" / "Dataset007_Unit"
    assert info.raw_dir == raw
    ds = json.loads((raw / "dataset.json").read_text())
    assert ds["labels"] == NNUNET_LABELS and ds["channel_names"] == {"0": "CT"} and ds["numTraining"] == 5
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"p{i}_0000.nii.gz" for i in range(5)]
    assert (raw / "imagesTs" / "x0_0000.nii.gz").is_file() and (raw / "labelsTs" / "x0.nii.gz").is_file()
    splits = json.loads((tmp_path / "pre" / "Dataset007_Unit" / "splits_final.json").read_text())
    assert len(splits) == 1 and len(splits[0]["val"]) == 1 and len(splits[0]["train"]) == 4
    assert splits[0]["val"] == info.split.test
    # labels survive the round trip on the same grid
    import SimpleITK as sitk
    lab = sitk.ReadImage(str(raw / "labelsTr" / "p0.nii.gz"))
    assert sorted(np.unique(sitk.GetArrayFromImage(lab))) == [0, 1, 2, 3, 4, 5]
    assert lab.GetSpacing() == pytest.approx((1.5, 1.5, 2.0))


def test_dataset_writer_refuses_bad_ids_duplicates_and_unknown_labels(tmp_path):
    with pytest.raises(InputError, match="more than once"):
        write_nnunet_dataset(tmp_path / "r", tmp_path / "p", 8, "U", [("a", _case()), ("a", _case())])
    with pytest.raises(InputError, match="file name"):
        write_nnunet_dataset(tmp_path / "r", tmp_path / "p", 8, "U", [("a/b", _case()), ("c", _case())])
    bad = _case(labels=(1, 2, 9))
    with pytest.raises(InputError, match="none of LiverPlan's five"):
        write_nnunet_dataset(tmp_path / "r2", tmp_path / "p2", 8, "U", [("a", bad), ("c", _case())])


def test_dataset_writer_does_not_overwrite_unless_asked(tmp_path):
    write_nnunet_dataset(tmp_path / "r", tmp_path / "p", 9, "U", [("a", _case()), ("b", _case())])
    with pytest.raises(InputError, match="already exists"):
        write_nnunet_dataset(tmp_path / "r", tmp_path / "p", 9, "U", [("a", _case()), ("b", _case())])
    write_nnunet_dataset(tmp_path / "r", tmp_path / "p", 9, "U", [("a", _case()), ("b", _case())], overwrite=True)


# --- plans ---------------------------------------------------------------------------------------
def _parent_plans() -> dict:
    return {"configurations": {"3d_fullres": {"patch_size": [96, 128, 128], "batch_size": 2, "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
                        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
                        "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


def test_small_configuration_lists_every_network_setting(tmp_path):
    p = tmp_path / "nnUNetPlans.json"
    p.write_text(json.dumps(_parent_plans()))
    plans = add_small_configuration(p, SmallNetSpec((48, 64, 64), (8, 16, 32, 64), 2))
    cfg = json.loads(p.read_text())["configurations"]["3d_small"]
    assert cfg == plans["configurations"]["3d_small"]
    assert cfg["inherits_from"] == "3d_fullres" and cfg["patch_size"] == [48, 64, 64]
    kw = cfg["architecture"]["arch_kwargs"]
    assert kw["n_stages"] == 4 and kw["features_per_stage"] == [8, 16, 32, 64]
    assert len(kw["strides"]) == len(kw["kernel_sizes"]) == len(kw["n_conv_per_stage"]) == 4
    assert len(kw["n_conv_per_stage_decoder"]) == 3
    for key in ("conv_op", "norm_op", "norm_op_kwargs", "nonlin", "nonlin_kwargs", "dropout_op", "conv_bias"):
        assert key in kw
    assert cfg["architecture"]["_kw_requires_import"]


def test_small_configuration_rejects_patch_not_divisible_by_pooling():
    with pytest.raises(InputError, match="divisible by 8"):
        small_configuration(_parent_plans()["configurations"]["3d_fullres"],
                            SmallNetSpec((50, 64, 64), (8, 16, 32, 64), 2))


def test_patch_is_clipped_to_small_images():
    spec = fit_patch_to([30, 40, 200], SmallNetSpec((64, 64, 64), (8, 16, 32, 64), 2))
    assert spec.patch_size == (32, 40, 64)


# --- cohort import and checks ----------------------------------------------------------------
def test_good_folder_cohort_passes(tmp_path):
    for cid in ("a", "b", "c"):
        _write_pair(tmp_path, cid)
    cohort = load_cohort(tmp_path)
    assert [e.case_id for e in cohort.entries] == ["a", "b", "c"]
    report = check_cohort(cohort)
    assert report.ok, report.text()
    assert report.checks[0].structures == ["liver", "portal_vein", "hepatic_veins", "ivc", "crlm"]


def test_bad_cohort_lists_every_problem_without_crashing(tmp_path):
    _write_pair(tmp_path, "good")
    _write_pair(tmp_path, "grid", lab_shape=(8, 12, 10))          # reference on another grid
    _write_pair(tmp_path, "nopv", values=(1, 0, 3, 4, 5))         # portal vein missing
    _write_pair(tmp_path, "weird", values=(1, 2, 3, 4, 9))        # a label value that is no structure
    _write_pair(tmp_path, "nolesion", values=(1, 2, 3, 4, 0))     # no lesions: only a warning
    (tmp_path / "images" / "orphan.nii.gz").write_bytes((tmp_path / "images" / "good.nii.gz").read_bytes())
    report = check_cohort(load_cohort(tmp_path))
    assert not report.ok
    by_id = {c.case_id: c for c in report.checks}
    assert by_id["good"].ok and by_id["nolesion"].ok and by_id["nolesion"].warnings
    assert "grid" in " ".join(by_id["grid"].problems).lower() or "voxels" in " ".join(by_id["grid"].problems)
    assert any("portal vein" in p for p in by_id["nopv"].problems)
    assert any("9" in p for p in by_id["weird"].problems)
    assert any("does not exist" in p for p in by_id["orphan"].problems)
    text = report.text()
    assert "4 with problems" in text and "PROBLEM nopv" in text


def test_unknown_label_name_in_label_map_is_a_clear_error(tmp_path):
    _write_pair(tmp_path, "a")
    (tmp_path / "label_map.json").write_text(json.dumps({"liver": [1], "spleen": [2]}))
    with pytest.raises(InputError, match="spleen"):
        load_cohort(tmp_path)


def test_csv_and_json_cohorts_with_external_set_and_label_map(tmp_path):
    for cid in ("a", "b", "x"):
        _write_pair(tmp_path, cid, values=(10, 20, 30, 40, 50))
    mapping = {"liver": [10], "portal_vein": [20], "hepatic_veins": [30], "ivc": [40], "crlm": [50]}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    (tmp_path / "cohort.csv").write_text(
        "case_id,image,reference,set\n"
        "a,images/a.nii.gz,references/a.nii.gz,train\n"
        "b,images/b.nii.gz,references/b.nii.gz,\n"
        "x,images/x.nii.gz,references/x.nii.gz,external\n")
    cohort = load_cohort(tmp_path / "cohort.csv", label_map=str(tmp_path / "map.json"))
    assert [e.set for e in cohort.entries] == ["train", "train", "external"]
    assert check_cohort(cohort).ok
    (tmp_path / "cohort.json").write_text(json.dumps({"label_map": "map.json", "cases": [
        {"case_id": "a", "image": "images/a.nii.gz", "reference": "references/a.nii.gz"},
        {"case_id": "b", "image": "images/b.nii.gz", "reference": "references/b.nii.gz"}]}))
    assert check_cohort(load_cohort(tmp_path / "cohort.json")).ok
    # without the map the foreign values are reported, not crashed on
    report = check_cohort(load_cohort(tmp_path / "cohort.csv"))
    assert not report.ok and all(not c.ok for c in report.checks)


def test_reference_values_the_label_map_does_not_cover_are_a_problem_unless_ignored(tmp_path):
    for cid in ("a", "b"):
        _write_pair(tmp_path, cid, values=(10, 20, 30, 40, 50, 70))       # 70: e.g. the gallbladder
    mapping = {"liver": [10], "portal_vein": [20], "hepatic_veins": [30], "ivc": [40], "crlm": [50]}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    report = check_cohort(load_cohort(tmp_path, label_map=str(tmp_path / "map.json")))
    assert not report.ok
    assert all(any("not in the label map" in p and "70" in p for p in c.problems) for c in report.checks)
    (tmp_path / "map.json").write_text(json.dumps({**mapping, "ignore": [70]}))
    assert check_cohort(load_cohort(tmp_path, label_map=str(tmp_path / "map.json"))).ok


def test_an_image_that_is_not_ct_is_a_problem_unless_allowed(tmp_path):
    import SimpleITK as sitk

    for cid in ("a", "b"):
        _write_pair(tmp_path, cid)
    mr = np.random.default_rng(2).uniform(0, 1, (8, 12, 12)).astype(np.float32)    # a normalised image
    img = sitk.GetImageFromArray(mr)
    img.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(img, str(tmp_path / "images" / "b.nii.gz"))
    report = check_cohort(load_cohort(tmp_path))
    by_id = {c.case_id: c for c in report.checks}
    assert by_id["a"].ok and not by_id["b"].ok
    assert any("does not look like a CT in Hounsfield units" in p for p in by_id["b"].problems)
    allowed = check_cohort(load_cohort(tmp_path), allow_non_hu=True)
    assert allowed.ok and any("Hounsfield" in w for w in {c.case_id: c for c in allowed.checks}["b"].warnings)


def test_a_missing_label_map_file_is_named_as_missing(tmp_path):
    _write_pair(tmp_path, "a")
    with pytest.raises(InputError, match="label map file .*nofile.json does not exist"):
        load_cohort(tmp_path, label_map=str(tmp_path / "nofile.json"))


def test_a_label_map_that_names_none_of_the_masks_says_why(tmp_path):
    import SimpleITK as sitk

    from engine.io import read_label_map
    from engine.labelmap import LabelMapping

    case = _case()
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("liver", "portalvein"):
        m = sitk.GetImageFromArray((case.labels > 0).astype(np.uint8))
        m.SetSpacing((1.5, 1.5, 2.0))
        sitk.WriteImage(m, str(masks / f"{name}.nii.gz"))
    with pytest.raises(InputError, match="names none of the mask files.*replaces matching by file name"):
        read_label_map(masks, case, LabelMapping({"liver": [1], "portal_vein": [2]}, name="values.json"))


def test_an_external_set_may_merge_structures_it_is_only_evaluated(tmp_path):
    # IRCADb-style masks (hepatic veins + IVC in one 'venoussystem' mask): not for training, fine as the
    # external set; the merge is kept for the evaluation.
    from engine.training.pipeline import _reference_mapping

    _write_pair(tmp_path / "ext", "x")
    _write_ircadb_masks(tmp_path / "ext" / "masks_x")
    (tmp_path / "ext.csv").write_text("case_id,image,reference\nx,ext/images/x.nii.gz,ext/masks_x\n")
    cohort = load_cohort(tmp_path / "ext.csv", label_map="ircadb")
    assert not check_cohort(cohort, min_train=0).ok                       # for training: IVC missing
    report = check_cohort(cohort, min_train=0, for_training=False)
    assert report.ok, report.text()
    raw = tmp_path / "Dataset1_X"
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"liverplan": {"provenance": {"external": {
        "label_map": "ircadb", "label_map_json": cohort.label_map.to_json_dict()}}}}))
    m = _reference_mapping(raw, "external")
    assert m is not None and m.merged_groups == {3: (3, 4)} and "ivc" in m.missing_structures()
    assert _reference_mapping(raw, "test") is None


def test_a_cohort_folders_external_set_may_have_its_own_label_map(tmp_path):
    # cohort/external/label_map.json ("ircadb"): the external centre's masks are read with their own map
    from engine.training.pipeline import TrainOptions, run_pipeline

    for cid in ("a", "b"):
        _write_pair(tmp_path / "cohort", cid)
    ext = tmp_path / "cohort" / "external"
    _write_pair(ext, "x")
    (ext / "references" / "x.nii.gz").unlink()
    _write_ircadb_masks(ext / "references" / "x")
    (ext / "label_map.json").write_text('"ircadb"')
    assert [e.case_id for e in load_cohort(tmp_path / "cohort").entries] == ["a", "b"]
    said: list[str] = []
    res = run_pipeline(TrainOptions(work_dir=tmp_path / "w", cohort=str(tmp_path / "cohort"), check_only=True),
                       say=said.append)
    assert "3 case(s)" not in res.cohort_report                    # two reports: train, then external
    assert "Cohort check: 1 case(s), 1 usable, 0 with problems." in res.cohort_report, res.cohort_report


def test_external_rows_of_a_cohort_file_are_checked_as_external_with_their_own_map(tmp_path):
    # set=external rows of a cohort CSV were checked as training cases with the training label map, and
    # --external-label-map was ignored for them: an IRCADb-style external case was refused.
    from engine.training.pipeline import TrainOptions, run_pipeline

    for cid in ("a", "b"):
        _write_pair(tmp_path / "c", cid)
    _write_pair(tmp_path / "c", "x")
    _write_ircadb_masks(tmp_path / "c" / "masks_x")
    (tmp_path / "cohort.csv").write_text(
        "case_id,image,reference,set\n"
        "a,c/images/a.nii.gz,c/references/a.nii.gz,train\n"
        "b,c/images/b.nii.gz,c/references/b.nii.gz,train\n"
        "x,c/images/x.nii.gz,c/masks_x,external\n")
    opts = dict(work_dir=tmp_path / "w", cohort=str(tmp_path / "cohort.csv"), check_only=True)
    with pytest.raises(InputError, match="cohort has problems"):          # IRCADb masks need their map
        run_pipeline(TrainOptions(**opts), say=lambda m: None)
    res = run_pipeline(TrainOptions(**opts, external_label_map="ircadb"), say=lambda m: None)
    assert "Cohort check: 2 case(s), 2 usable" in res.cohort_report, res.cohort_report
    assert "Cohort check: 1 case(s), 1 usable" in res.cohort_report, res.cohort_report
    # a file of external cases only, with phantoms as the training cases
    (tmp_path / "ext_only.csv").write_text("case_id,image,reference,set\nx,c/images/x.nii.gz,c/masks_x,external\n")
    res = run_pipeline(TrainOptions(work_dir=tmp_path / "w", cohort=str(tmp_path / "ext_only.csv"),
                                    external_label_map="ircadb", phantoms=3, phantom_shape=(24, 32, 32),
                                    check_only=True), say=lambda m: None)
    assert "Cohort check: 1 case(s), 1 usable" in res.cohort_report and "0 case(s)" not in res.cohort_report
    # a second external set beside the file's own is refused in words
    with pytest.raises(InputError, match="use one of them"):
        run_pipeline(TrainOptions(**opts, external=str(tmp_path / "cohort.csv")), say=lambda m: None)
    assert not (tmp_path / "w").exists()


def test_merged_label_map_cannot_train_all_five(tmp_path):
    for cid in ("a", "b"):
        _write_pair(tmp_path, cid)
    report = check_cohort(load_cohort(tmp_path, label_map="ircadb"))
    assert not report.ok
    assert any("no separate label" in p for p in report.problems)


def test_bad_cohort_descriptions(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_cohort(tmp_path / "nope.csv")
    (tmp_path / "c.csv").write_text("id,ct\n1,2\n")
    with pytest.raises(InputError, match="case_id, image and reference"):
        load_cohort(tmp_path / "c.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="images/"):
        load_cohort(tmp_path / "empty")


def test_init_weights_reader_and_loader(tmp_path):
    """The checkpoint reader strips DDP's 'module.' prefix; a missing file, a non-checkpoint and weights of
    another network are refused with plain messages."""
    import torch

    from engine.training.runner import _load_network_weights, _read_network_weights

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True))
    src = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True))
    ck = tmp_path / "ck.pth"
    torch.save({"network_weights": {"module." + k: v for k, v in src.state_dict().items()}}, ck)
    _load_network_weights(net, _read_network_weights(ck), ck)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), src.state_dict().values()))

    with pytest.raises(InputError, match="does not exist"):
        _read_network_weights(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        _read_network_weights(tmp_path / "junk.pth")
    torch.save({"something": 1}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="holds no network weights"):
        _read_network_weights(tmp_path / "other.pth")
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3))
    torch.save({"network_weights": other.state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(InputError, match="do not fit"):
        _load_network_weights(net, _read_network_weights(tmp_path / "wide.pth"), tmp_path / "wide.pth")


def test_the_time_budget_counts_checkpointing_between_epochs_but_not_a_pause():
    # On an H100 the demo network's epochs took 4.3 s and the saving/plotting between them 1.5 s: a
    # budget that counted only the epochs ran 35 % over its wall-clock minutes.
    from engine.training.nnunet_ext.liverplan_trainer import PAUSE_S, budget_seconds

    starts = [0.0, 5.8, 11.6]
    ends = [4.3, 10.1, 15.9]
    assert budget_seconds(starts, ends) == pytest.approx(15.9)
    # a started epoch: its gap counts, its running time is the caller's to add
    assert budget_seconds(starts + [17.4], ends) == pytest.approx(17.4)
    # a resumed run (a pause of hours between epochs 1 and 2): the pause is not training time
    resumed = [0.0, 5.8, 5.8 + 4.3 + PAUSE_S + 3600]
    assert budget_seconds(resumed, [4.3, 10.1, resumed[2] + 4.3]) == pytest.approx(4.3 + 1.5 + 4.3 + 4.3)
    assert budget_seconds([], []) == 0.0


def test_worker_processes_die_with_a_killed_parent(tmp_path):
    # `kill -9` of a training left nnU-Net's augmentation workers running; with the parent-death signal
    # the kernel ends a forked worker when its parent dies.
    import os
    import signal
    import subprocess
    import sys
    import time

    from engine.training.runner import children_die_with_parent

    if not sys.platform.startswith("linux"):
        # no parent-death signal elsewhere: the function says so rather than pretending
        assert children_die_with_parent() is False
        return
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from engine.training.runner import children_die_with_parent\n"
        "def work():\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    assert children_die_with_parent()\n"
        "    p = mp.get_context('fork').Process(target=work, daemon=True)\n"
        "    p.start()\n"
        "    children_die_with_parent(False)\n"          # switched off: later children are left alone
        "    q = mp.get_context('fork').Process(target=work, daemon=True)\n"
        "    q.start()\n"
        "    print(p.pid, q.pid, flush=True)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child, other = (int(v) for v in parent.stdout.readline().split())
        os.kill(child, 0)                                   # the worker runs
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        gone = False
        while time.time() < deadline and not gone:
            try:
                os.kill(child, 0)
                with open(f"/proc/{child}/stat") as f:      # a zombie waiting for PID 1 counts as gone
                    gone = f.read().split(")")[1].split()[0] == "Z"
            except (ProcessLookupError, FileNotFoundError):
                gone = True
            time.sleep(0.1)
        assert gone, "the worker outlived its killed parent"
        os.kill(other, 0)                                   # forked after the switch-off: still running
        os.kill(other, signal.SIGKILL)
    finally:
        parent.kill()


def test_sigterm_interrupts_the_run_but_ends_forked_workers_quietly(tmp_path):
    # nnU-Net's process pools end their workers with SIGTERM after each step; with the run's SIGTERM
    # handler inherited, every worker printed a KeyboardInterrupt traceback into the training log.
    import subprocess
    import sys

    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing as mp, os, signal, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from engine.training.runner import sigterm_interrupts\n"
        "def square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n"
        "    with sigterm_interrupts():\n"
        "        with mp.get_context('fork').Pool(2) as pool:\n"   # __exit__ = terminate(): SIGTERM each worker
        "            print(sum(pool.map(square, range(10))), flush=True)\n"
        "        try:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            time.sleep(5)\n"
        "            print('not interrupted')\n"
        "        except KeyboardInterrupt:\n"
        "            print('interrupted')\n"
        "    print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["285", "interrupted", "True"]
    assert "KeyboardInterrupt" not in r.stderr and "Traceback" not in r.stderr, r.stderr
