"""Model packages are data, never code (issue 13): plans.json / dataset.json / card / checkpoint checks.

The exploit from the issue: a plans.json whose ``arch_kwargs`` say ``"nonlin": "os.system"`` with
``"nonlin_kwargs": {"command": ...}`` made nnU-Net run the command when it built the network. Each test
below would create a marker file if the command ran; none may exist afterwards.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.model_safety import check_card, check_checkpoint, check_dataset_json, check_plans
from engine.models import install_model_zip, load_checkpoint, load_model
from tiny_model import cached_tiny_model, small_phantom, tiny_plans

CONF = "3d_fullres"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return cached_tiny_model(tmp_path_factory)


def _evil_plans(marker: Path) -> dict:
    plans = tiny_plans()
    kw = plans["configurations"][CONF]["architecture"]["arch_kwargs"]
    kw["nonlin"] = "os.system"
    kw["nonlin_kwargs"] = {"command": f"touch {marker}"}
    return plans


def _copy_with_plans(tiny: Path, dest: Path, plans: dict) -> Path:
    target = dest / tiny.parent.name / tiny.name
    shutil.copytree(tiny, target)
    (target / "plans.json").write_text(json.dumps(plans))
    return target


def _zip(folder: Path, zpath: Path) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.parent.name}/{folder.name}/{f.relative_to(folder).as_posix()}")
    return zpath


# --- the exploit: install, load, the engine's segment (the window's Run) and the CLI ---------------------------
def test_exploit_plans_is_refused_at_install_and_the_command_never_runs(tiny, tmp_path):
    marker = tmp_path / "PWNED_install"
    folder = _copy_with_plans(tiny, tmp_path / "src", _evil_plans(marker))
    zp = _zip(folder, tmp_path / "evil.zip")
    with pytest.raises(ModelError) as err:
        install_model_zip(zp, dest_root=tmp_path / "models")
    msg = str(err.value)
    assert "arch_kwargs.nonlin" in msg and "os.system" in msg
    assert not marker.exists()
    assert not any((tmp_path / "models").iterdir())          # nothing installed, no temporary folder left
    with pytest.raises(ModelError, match="nonlin"):
        load_model(folder)
    assert not marker.exists()


def test_exploit_plans_never_runs_in_the_engine_segment_used_by_the_window(tiny, tmp_path):
    """The window runs engine.inference.segment with a ModelInfo; even one whose plans were changed after
    load_model checked them (built elsewhere, or edited in memory) is checked again before nnU-Net sees it."""
    from engine.inference import SegmentOptions, segment
    from engine.inference.pipeline import clear_model_cache

    marker = tmp_path / "PWNED_engine"
    good = load_model(tiny)
    evil = dataclasses.replace(good, plans=_evil_plans(marker))
    clear_model_cache()
    with pytest.raises(ModelError) as err:
        segment(small_phantom(shape=(24, 48, 48)), evil, SegmentOptions(device="cpu", mode="fast", threads=1))
    assert not marker.exists(), "the command in plans.json ran"
    assert "arch_kwargs.nonlin" in str(err.value)
    # ... also when the good model of the same folder is loaded and cached already (an earlier run)
    case = small_phantom(shape=(24, 48, 48))
    segment(case, good, SegmentOptions(device="cpu", mode="fast", threads=1))
    with pytest.raises(ModelError, match="arch_kwargs.nonlin"):
        segment(case, evil, SegmentOptions(device="cpu", mode="fast", threads=1))
    assert not marker.exists(), "the command in plans.json ran"


def test_exploit_plans_never_runs_from_the_cli_segment(tiny, tmp_path, capsys):
    import main
    from engine.io import write_image

    marker = tmp_path / "PWNED_cli"
    folder = _copy_with_plans(tiny, tmp_path / "m", _evil_plans(marker))
    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_phantom(shape=(24, 48, 48)))
    out = tmp_path / "out"
    rc = main.main(["segment", str(ct), "--model", str(folder), "--out", str(out), "--device", "cpu",
                    "--mode", "fast", "--threads", "1", "--no-progress"])
    assert not marker.exists(), "the command in plans.json ran"
    assert rc != 0
    err = capsys.readouterr().err
    assert "nonlin" in err and "Traceback" not in err


def test_a_failed_segment_removes_the_output_folder_it_made(tiny, tmp_path, capsys):
    import main

    out = tmp_path / "made_by_segment"
    bad_ct = tmp_path / "broken.nii.gz"
    bad_ct.write_bytes(b"not a nifti at all")
    rc = main.main(["segment", str(bad_ct), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                    "--no-progress"])
    assert rc != 0
    assert not out.exists()
    # a folder that existed before is kept (only what the run made is removed)
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    rc = main.main(["segment", str(bad_ct), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                    "--no-progress"])
    assert rc != 0 and (out / "mine.txt").read_text() == "user file"


# --- the allow-list accepts what real packages hold -------------------------------------------------------------
def _old_format_configuration() -> dict:
    """A 3d_fullres configuration in nnU-Net 2.0's plans format (TotalSegmentator v2.0 releases)."""
    return {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [128, 128, 128], "median_image_size_in_voxels": [199.0, 256.0, 256.0],
            "spacing": [1.5, 1.5, 1.5], "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "UNet_class_name": "PlainConvUNet", "UNet_base_num_features": 32,
            "n_conv_per_stage_encoder": [2, 2, 2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2, 2, 2],
            "num_pool_per_axis": [5, 5, 5], "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * 5,
            "conv_kernel_sizes": [[3, 3, 3]] * 6, "unet_max_num_features": 320,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "batch_dice": True}


def _resenc_plans() -> dict:
    """nnU-Net's ResEnc preset layout (ResidualEncoderUNet, n_blocks_per_stage, torch.nn.* short names)."""
    plans = tiny_plans(patch=(128, 128, 128), features=(32, 64, 128, 256, 320, 320))
    arch = plans["configurations"][CONF]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    kw = arch["arch_kwargs"]
    kw["n_blocks_per_stage"] = kw.pop("n_conv_per_stage")
    kw["n_conv_per_stage_decoder"] = [1] * 5
    kw["conv_op"], kw["norm_op"] = "torch.nn.Conv3d", "torch.nn.InstanceNorm3d"
    kw["dropout_op"], kw["dropout_op_kwargs"] = "torch.nn.Dropout3d", {"p": 0.1, "inplace": True}
    return plans


@pytest.mark.parametrize("kind", ["tiny", "old_format", "resenc", "bundled_demo"])
def test_real_plans_layouts_are_accepted(kind):
    if kind == "tiny":
        plans = tiny_plans()
    elif kind == "old_format":
        plans = tiny_plans()
        plans["configurations"][CONF] = _old_format_configuration()
    elif kind == "resenc":
        plans = _resenc_plans()
    else:
        p = Path(__file__).resolve().parents[2] / "resources" / "models" / "demo" / "plans.json"
        if not p.is_file():
            pytest.skip("the bundled demo model is not in this checkout")
        plans = json.loads(p.read_text())
        for conf in plans["configurations"]:
            check_plans(plans, conf)
        return
    check_plans(plans, CONF)


def test_old_format_plans_build_the_network_nnunet_would():
    """The old format is accepted and nnU-Net's own conversion turns it into an allowed architecture."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = tiny_plans()
    plans["configurations"][CONF] = _old_format_configuration()
    check_plans(plans, CONF)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = PlansManager(plans).get_configuration(CONF)
    converted = copy.deepcopy(plans)
    converted["configurations"][CONF] = cm.configuration
    check_plans(converted, CONF)


# --- refusals in words that name the field ------------------------------------------------------------------------
def _with(path: str, value):
    plans = tiny_plans()
    node = plans["configurations"][CONF]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return plans


_DELETE = object()


@pytest.mark.parametrize("path,value,field", [
    ("patch_size", [0, 32, 32], "patch_size[0]"),
    ("patch_size", [-32, 32, 32], "patch_size[0]"),
    ("patch_size", ["32", 32, 32], "patch_size[0]"),
    ("patch_size", [4096, 4096, 4096], "patch_size"),
    ("spacing", [0, 1, 1], "spacing[0]"),
    ("spacing", [float("nan"), 1, 1], "spacing[0]"),
    ("spacing", [1, 1], "spacing"),
    ("architecture.arch_kwargs.features_per_stage", [4, 8], "features_per_stage"),
    ("architecture.arch_kwargs.features_per_stage", [4, 8, "16"], "features_per_stage[2]"),
    ("architecture.arch_kwargs.n_stages", 0, "n_stages"),
    ("architecture.arch_kwargs.kernel_sizes", [[3, 3]] * 3, "kernel_sizes[0]"),
    ("architecture.arch_kwargs.n_conv_per_stage_decoder", [2, 2, 2], "n_conv_per_stage_decoder"),
    ("architecture.arch_kwargs.conv_op", "torch.nn.modules.conv.Conv2d", "conv_op"),
    ("architecture.arch_kwargs.conv_op", "subprocess.call", "conv_op"),
    ("architecture.arch_kwargs.norm_op", "builtins.exec", "norm_op"),
    ("architecture.arch_kwargs.dropout_op", "os.system", "dropout_op"),
    ("architecture.arch_kwargs.nonlin_kwargs", {"command": "true"}, "nonlin_kwargs.command"),
    ("architecture.arch_kwargs.norm_op_kwargs", {"eps": "1e-5"}, "norm_op_kwargs.eps"),
    ("architecture.arch_kwargs.evil", 1, "arch_kwargs.evil"),
    ("architecture.network_class_name", "os.system", "network_class_name"),
    ("architecture._kw_requires_import", ["conv_op", "evil"], "_kw_requires_import[1]"),
    ("resampling_fn_data", "os.system", "resampling_fn_data"),
    ("resampling_fn_data_kwargs", {"order": 99}, "resampling_fn_data_kwargs.order"),
    ("preprocessor_name", "Popen", "preprocessor_name"),
    ("normalization_schemes", ["CTNormalization", "x"], "normalization_schemes[1]"),
    ("use_mask_for_norm", [False, True], "use_mask_for_norm"),
    ("batch_size", 0, "batch_size"),
    ("architecture", _DELETE, "architecture"),
])
def test_out_of_range_or_foreign_plans_values_are_refused_naming_the_field(path, value, field):
    with pytest.raises(ModelError) as err:
        check_plans(_with(path, value), CONF)
    msg = str(err.value)
    assert f"configurations.{CONF}." in msg and field in msg, msg
    assert "Traceback" not in msg


def test_plans_top_level_and_inheritance_are_checked():
    plans = tiny_plans()
    plans["image_reader_writer"] = "os.system"
    with pytest.raises(ModelError, match="image_reader_writer"):
        check_plans(plans)
    plans = tiny_plans()
    plans["configurations"]["a"] = {"inherits_from": "b"}
    plans["configurations"]["b"] = {"inherits_from": "a"}
    with pytest.raises(ModelError, match="loops"):
        check_plans(plans, "a")
    plans = tiny_plans()
    plans["configurations"] = []
    with pytest.raises(ModelError, match="configurations"):
        check_plans(plans)
    plans = tiny_plans()
    plans["configurations"]["small"] = {"inherits_from": CONF, "patch_size": [16, 16, 16]}
    check_plans(plans, "small")


def test_dataset_json_card_and_checkpoint_fields_are_checked(tmp_path):
    with pytest.raises(ModelError, match="labels.liver"):
        check_dataset_json({"labels": {"background": 0, "liver": "1"}, "channel_names": {"0": "CT"}})
    with pytest.raises(ModelError, match="overwrite_image_reader_writer"):
        check_dataset_json({"labels": {"background": 0}, "overwrite_image_reader_writer": "os.system"})
    with pytest.raises(ModelError, match="demo"):
        check_card({"name": "x", "demo": "yes"})
    p = tmp_path / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(ModelError, match="trainer_name"):
        check_checkpoint({"network_weights": {}, "trainer_name": "os.system"}, p)
    with pytest.raises(ModelError, match="init_args.plans"):
        check_checkpoint({"network_weights": {}, "init_args": {"plans": _evil_plans(tmp_path / "x"),
                                                                "configuration": CONF}}, p)


def test_a_checkpoint_with_a_foreign_trainer_name_is_refused_on_load(tiny, tmp_path):
    import torch

    ck = load_checkpoint(tiny / "fold_0" / "checkpoint_final.pth")
    ck["trainer_name"] = "os.system"
    p = tmp_path / "fold_0" / "checkpoint_final.pth"
    p.parent.mkdir()
    torch.save(ck, p)
    with pytest.raises(ModelError, match="trainer_name"):
        load_checkpoint(p)


def test_legacy_pickle_checkpoint_is_refused_as_unsafe_without_advice_to_weaken_the_loader(tmp_path, caplog):
    """torch's legacy (non-zip) format cannot be scanned up-front; it used to be called 'damaged', and the log
    repeated torch's advice to load it with weights_only=False."""
    import argparse
    import logging

    import torch

    p = tmp_path / "legacy.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "args": argparse.Namespace(a=1)}, p,
               _use_new_zipfile_serialization=False)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as err:
        load_checkpoint(p)
    msg = str(err.value)
    assert "unsafe" in msg and "argparse.Namespace" in msg and "damaged" not in msg
    assert "weights_only" not in msg and "weights_only" not in caplog.text
    # a file that is no checkpoint at all: damaged, also without the advice
    q = tmp_path / "random.pth"
    q.write_bytes(bytes(range(256)) * 10)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError, match="damaged"):
        load_checkpoint(q)
    assert "weights_only" not in caplog.text
