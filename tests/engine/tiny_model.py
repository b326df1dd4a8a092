"""Build a tiny nnU-Net v2 trained-model folder on the fly (CPU, seconds), for tests and benchmarks.

The folder is what nnU-Net's training leaves in nnUNet_results:
``<root>/Dataset999_TinyLiver/nnUNetTrainer__nnUNetPlans__3d_fullres/{dataset.json, plans.json,
fold_0/checkpoint_final.pth}``. The plans describe a very small 3d_fullres configuration (features 4-16,
3 stages, 32^3 patch) whose ``architecture`` lists every network setting. The checkpoint has the same
keys and value types as one nnUNetTrainer.save_checkpoint writes (numpy float64 in the log and
``_best_ema``, a torch.device in ``init_args``), so safe loading is exercised for real. Optionally the
network is trained for a few steps on given (image, labels) volumes so its output is not noise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

FIVE_LABELS = {"background": 0, "liver": 1, "portal_vein": 2, "hepatic_veins": 3, "ivc": 4, "crlm": 5}


def tiny_plans(patch=(32, 32, 32), features=(4, 8, 16), spacing=(2.5, 1.6, 1.6), configuration="3d_fullres",
               dataset_name="Dataset999_TinyLiver", reader: str = "SimpleITKIO") -> dict:
    n = len(features)
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [96, 128, 128],
        "image_reader_writer": reader,
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {configuration: {
            "data_identifier": f"nnUNetPlans_{configuration}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": list(patch),
            "median_image_size_in_voxels": [64, 96, 96],
            "spacing": list(spacing),
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n,
                    "features_per_stage": list(features),
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * n,
                    "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
                    "n_conv_per_stage": [2] * n,
                    "n_conv_per_stage_decoder": [2] * (n - 1),
                    "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                    "dropout_op": None,
                    "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU",
                    "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 400.0, "mean": 90.0, "median": 95.0, "min": -200.0, "percentile_00_5": -100.0,
            "percentile_99_5": 300.0, "std": 60.0}},
    }


def build_tiny_model(root: Path, *, labels: Optional[dict] = None, channel: str = "CT", patch=(32, 32, 32),
                     features=(4, 8, 16), spacing=(2.5, 1.6, 1.6), configuration: str = "3d_fullres",
                     folds: Sequence[str] = ("0",), trainer_name: str = "nnUNetTrainer", seed: int = 0,
                     card: Optional[dict] = None, train_on: Optional[list] = None, train_steps: int = 0,
                     mirror_axes=(0, 1, 2), train_patch=None, dataset_name: str = "Dataset999_TinyLiver",
                     reader: Optional[str] = None, dataset_json_extra: Optional[dict] = None,
                     plans_name: str = "nnUNetPlans") -> Path:
    """Write a tiny model below ``root``; returns the model folder (the one holding dataset.json).

    train_on: list of (image_hu (z,y,x), labels (z,y,x) in model values) already at ``spacing``; the
    network then gets ``train_steps`` Adam steps of cross-entropy on random ``train_patch`` crops (default:
    the inference patch; any size divisible by the pooling works for a fully convolutional net).
    dataset_name / reader / dataset_json_extra / plans_name: a public release's layout (folder
    ``<dataset_name>/<trainer>__<plans_name>__<configuration>``; ``reader`` written to plans.json's
    ``image_reader_writer`` and dataset.json's ``overwrite_image_reader_writer`` as nnU-Net's planner does).
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    labels = dict(labels or FIVE_LABELS)
    plans = tiny_plans(patch, features, spacing, configuration, dataset_name, reader or "SimpleITKIO")
    plans["plans_name"] = plans_name
    dataset_json = {"channel_names": {"0": channel}, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz",
                    "name": "TinyLiver", "description": "tiny test model (random or briefly trained weights)"}
    if reader is not None:
        dataset_json["overwrite_image_reader_writer"] = reader
    dataset_json.update(dataset_json_extra or {})
    folder = Path(root) / dataset_name / f"{trainer_name}__{plans_name}__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    if card is not None:
        (folder / "liverplan_model.json").write_text(json.dumps(card, indent=2))

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = nnUNetTrainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=False)
        if train_on and train_steps:
            _train(net, train_on, train_steps, tuple(train_patch or patch), plans, seed + k)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        ckpt = {
            "network_weights": net.state_dict(),
            "optimizer_state": opt.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.1), np.float64(0.2)], "ema_fg_dice": [np.float64(0.15)],
                        "dice_per_class_or_region": [[np.float64(0.1)] * (n_out - 1)],
                        "train_losses": [0.9, 0.8], "val_losses": [0.95, 0.85], "lrs": [0.01, 0.0099],
                        "epoch_start_timestamps": [1.0, 2.0], "epoch_end_timestamps": [1.5, 2.5]},
            "_best_ema": np.float64(0.15),
            "current_epoch": 2,
            "init_args": {"plans": plans, "configuration": configuration, "fold": int(fold) if str(fold).isdigit()
                          else fold, "dataset_json": dataset_json, "device": torch.device("cpu")},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes is not None else None,
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(ckpt, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def _train(net, volumes: list, steps: int, patch, plans: dict, seed: int) -> None:
    import torch

    props = plans["foreground_intensity_properties_per_channel"]["0"]
    lo, hi, mean, std = props["percentile_00_5"], props["percentile_99_5"], props["mean"], props["std"]
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        img, lab = volumes[int(rng.integers(len(volumes)))]
        starts = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(img.shape, patch)]
        sl = tuple(slice(a, a + p) for a, p in zip(starts, patch))
        x = (np.clip(img[sl].astype(np.float32), lo, hi) - mean) / std
        y = lab[sl].astype(np.int64)
        pad = [(0, p - s) for s, p in zip(x.shape, patch)]
        x, y = np.pad(x, pad), np.pad(y, pad)
        out = net(torch.from_numpy(x)[None, None])
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y)[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


# ------------------------------------------------------------------------------------------------
# pytest helpers: one model per session (cached on disk under the session's base temp folder, so test
# modules that import these fixtures share it).
TEST_SPACING = (3.0, 2.4, 2.4)


def cached_tiny_model(tmp_path_factory, name: str = "five", **kwargs) -> Path:
    base = tmp_path_factory.getbasetemp() / f"tiny_model_{name}"
    done = base / ".built"
    if not done.exists():
        kwargs.setdefault("spacing", TEST_SPACING)
        folder = build_tiny_model(base, **kwargs)
        done.write_text(str(folder))
    return Path(done.read_text())


def small_phantom(seed: int = 3, shape=(40, 80, 80), spacing=(2.5, 1.6, 1.6)):
    """A small phantom (source spacing differs from the model's, so resampling matters)."""
    from engine.phantom import make_phantom

    return make_phantom(seed=seed, shape=shape, spacing=spacing)
