"""A small nnU-Net configuration added to nnUNetPlans.json.

nnU-Net's default 3d_fullres plan for a CT cohort is sized for a GPU (tens of millions of parameters,
~47 s per step on two CPU cores here). :func:`add_small_configuration` adds a configuration that
``"inherits_from": "3d_fullres"`` — same spacing, normalisation and preprocessed data (no
re-preprocessing) — with a smaller patch, batch and network. nnU-Net's inheritance is shallow: a new
``architecture`` entry replaces the parent's completely, so every network setting is listed here.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..io.atomic import write_text_atomic

log = logging.getLogger(__name__)

SMALL_CONFIGURATION = "3d_small"


@dataclass(frozen=True)
class SmallNetSpec:
    """Network and sampling settings of the small configuration.

    patch_size: (z, y, x) voxels of the preprocessed (resampled) grid; each axis must be divisible by
        2**(n_stages-1) (the pooling), e.g. (48, 64, 64) for 4 stages.
    features: feature maps per encoder stage (its length is the number of stages).
    batch_size: patches per training step.
    """

    patch_size: tuple[int, int, int] = (64, 64, 64)
    features: tuple[int, ...] = (8, 16, 32, 64)
    batch_size: int = 2
    n_conv_per_stage: int = 2

    def validate(self) -> None:
        n = len(self.features)
        if n < 2:
            raise InputError("The small network needs at least 2 stages.")
        div = 2 ** (n - 1)
        for p in self.patch_size:
            if p % div:
                raise InputError(f"Each patch size must be divisible by {div} for a {n}-stage network; "
                                 f"{tuple(self.patch_size)} is not.")
        if self.batch_size < 1:
            raise InputError("The batch size must be at least 1.")


def small_configuration(parent: dict, spec: SmallNetSpec) -> dict:
    """The plans entry of the small configuration, built from the parent 3d_fullres entry."""
    spec.validate()
    n = len(spec.features)
    arch = copy.deepcopy(parent.get("architecture"))
    if not arch or "arch_kwargs" not in arch:
        raise InputError("These nnU-Net plans have no 'architecture' entry in 3d_fullres; the small "
                         "configuration needs nnU-Net >= 2.4 plans.")
    kw = dict(arch["arch_kwargs"])
    kw.update({
        "n_stages": n,
        "features_per_stage": list(spec.features),
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [spec.n_conv_per_stage] * n,
        "n_conv_per_stage_decoder": [spec.n_conv_per_stage] * (n - 1),
    })
    # Every network setting listed (the override is shallow): keep the parent's ops/norm/nonlin.
    for key in ("conv_op", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs",
                "nonlin", "nonlin_kwargs"):
        kw.setdefault(key, parent["architecture"]["arch_kwargs"].get(key))
    arch["arch_kwargs"] = kw
    return {
        "inherits_from": "3d_fullres",
        "patch_size": list(spec.patch_size),
        "batch_size": int(spec.batch_size),
        "architecture": arch,
    }


def add_small_configuration(plans_path: str | Path, spec: SmallNetSpec = SmallNetSpec(),
                            name: str = SMALL_CONFIGURATION) -> dict:
    """Add (or replace) the small configuration in an nnUNetPlans.json; returns the plans dict."""
    plans_path = Path(plans_path)
    if not plans_path.is_file():
        raise InputError(f"{plans_path} does not exist: run nnU-Net's planning first.")
    plans = json.loads(plans_path.read_text())
    parent = plans.get("configurations", {}).get("3d_fullres")
    if parent is None:
        raise InputError(f"{plans_path} has no 3d_fullres configuration to inherit from.")
    plans["configurations"][name] = small_configuration(parent, spec)
    write_text_atomic(plans_path, json.dumps(plans, indent=2), overwrite=True)
    log.info("added configuration %s to %s (patch %s, features %s, batch %d)", name, plans_path,
             spec.patch_size, spec.features, spec.batch_size)
    return plans


def fit_patch_to(median_shape_zyx: Sequence[int], spec: SmallNetSpec) -> SmallNetSpec:
    """Shrink the patch so it does not exceed the (pool-divisible) median image size; keeps the rest."""
    div = 2 ** (len(spec.features) - 1)
    patch = []
    for p, m in zip(spec.patch_size, median_shape_zyx):
        cap = max(div, (int(m) + div - 1) // div * div)  # round the image size up to the pooling grid
        patch.append(min(int(p), cap))
    return SmallNetSpec(tuple(patch), spec.features, spec.batch_size, spec.n_conv_per_stage)
