"""Model packages are data, never code: checks of plans.json, dataset.json, the model card and a checkpoint's
``init_args`` / ``trainer_name`` before nnU-Net sees them.

nnU-Net resolves dotted names from ``plans.json`` by importing them and calling what it finds
(``pydoc.locate`` on the network class and on every ``arch_kwargs`` entry listed in ``_kw_requires_import``:
``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``), and looks other names up inside its own package
(resampling functions, normalisation schemes, preprocessor, reader/writer, label manager, trainer). A plans
file saying ``"nonlin": "os.system"`` therefore runs a command when the network is built. Here every such
name must come from an explicit allow-list of what nnU-Net v2.x and ``dynamic_network_architectures``
really use (and what TotalSegmentator's public releases name, including the old plans format of nnU-Net
2.0 with ``UNet_class_name``), every number must be of the right type and in range, and lists must have
consistent lengths. Anything else is refused with a :class:`~engine.errors.ModelError` naming the field.

Called by :mod:`engine.models` at install and at every load (``load_model``, ``load_checkpoint``) and by the
inference pipeline right before nnU-Net builds the network. No torch / nnunetv2 import here.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from .errors import ModelError

# ---------------------------------------------------------------------------------------------------------
# Allow-lists (names exactly as they appear in real plans files)

#: network classes nnU-Net v2 builds from plans (dynamic_network_architectures); the ``residual_unet`` path is
#: what nnU-Net's own old-format conversion writes (found again by class name inside the package).
NETWORK_CLASSES: dict[str, str] = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": "PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": "ResidualEncoderUNet",
    "dynamic_network_architectures.architectures.unet.ResidualUNet": "ResidualUNet",
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": "ResidualEncoderUNet",
    "dynamic_network_architectures.architectures.residual_unet.ResidualUNet": "ResidualUNet",
}
#: nnU-Net 2.0 plans (``UNet_class_name``), converted by nnU-Net's ConfigurationManager
OLD_FORMAT_CLASSES = ("PlainConvUNet", "ResidualEncoderUNet")


def _torch_names(module: str, classes: Iterable[str]) -> dict[str, str]:
    """Both spellings nnU-Net writes: ``torch.nn.X`` and ``torch.nn.modules.<module>.X``."""
    out = {}
    for c in classes:
        out[f"torch.nn.{c}"] = c
        out[f"torch.nn.modules.{module}.{c}"] = c
    return out


CONV_OPS = _torch_names("conv", ("Conv1d", "Conv2d", "Conv3d"))
NORM_OPS = {**_torch_names("instancenorm", ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")),
            **_torch_names("batchnorm", ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")),
            **_torch_names("normalization", ("GroupNorm", "LayerNorm"))}
DROPOUT_OPS = _torch_names("dropout", ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout"))
NONLINS = _torch_names("activation", ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU", "Mish", "Tanh",
                                      "Sigmoid", "Hardswish"))
BLOCKS = {"dynamic_network_architectures.building_blocks.residual.BasicBlockD": "BasicBlockD",
          "dynamic_network_architectures.building_blocks.residual.BottleneckD": "BottleneckD"}
#: arch_kwargs entries nnU-Net imports by name, and the names each may hold
IMPORTED_KWARGS: dict[str, dict[str, str]] = {"conv_op": CONV_OPS, "norm_op": NORM_OPS,
                                              "dropout_op": DROPOUT_OPS, "nonlin": NONLINS, "block": BLOCKS}

#: keyword arguments of the ops, with their types (numbers: (low, high) inclusive)
OP_KWARGS: dict[str, dict[str, Any]] = {
    "norm_op_kwargs": {"eps": (0.0, 1.0), "affine": bool, "momentum": (0.0, 1.0), "track_running_stats": bool,
                       "num_groups": (1, 4096), "elementwise_affine": bool, "bias": bool},
    "dropout_op_kwargs": {"p": (0.0, 1.0), "inplace": bool},
    "nonlin_kwargs": {"inplace": bool, "negative_slope": (0.0, 10.0), "alpha": (0.0, 10.0),
                      "num_parameters": (1, 4096), "init": (-10.0, 10.0), "approximate": ("none", "tanh")},
}
RESAMPLING_FNS = ("resample_data_or_seg_to_shape", "resample_data_or_seg_to_spacing", "resample_torch_fornnunet",
                  "resample_torch_simple", "no_resampling_hack")
RESAMPLING_KWARGS: dict[str, Any] = {"is_seg": bool, "order": (0, 5), "order_z": (0, 5),
                                     "force_separate_z": (bool, None), "separate_z_anisotropy_threshold": (0.0, 1e6),
                                     "num_threads": (1, 1024), "memefficient_seg_resampling": bool,
                                     "mode": ("linear", "nearest", "nearest-exact", "area", "bicubic"),
                                     "aniso_axis_mode": ("nearest-exact", "nearest", "linear"),
                                     "device": ("cpu", "cuda", "mps")}
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")
PREPROCESSORS = ("DefaultPreprocessor",)
READER_WRITERS = ("SimpleITKIO", "SimpleITKIOWithReorient", "NibabelIO", "NibabelIOWithReorient", "Tiff3DIO",
                  "NaturalImage2DIO")
LABEL_MANAGERS = ("LabelManager",)
#: a trainer is looked up by class name inside nnU-Net's own training package: a plain identifier
_TRAINER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CONF_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_FILE_ENDING_RE = re.compile(r"^\.[A-Za-z0-9.]{1,15}$")

MAX_PATCH_VOXELS = 2 ** 27            # 512^3: far above any real nnU-Net patch (128^3 - 192^3)
MAX_PARAMETERS = 2_000_000_000         # ~8 GB of float32 weights; real nnU-Net 3D models: 30-400 M
MAX_TEXT = 20_000                      # characters in any free-text field


# ---------------------------------------------------------------------------------------------------------
class _Checker:
    """Collects the first problem with a path-like field name (``configurations.3d_fullres.patch_size[1]``)."""

    def __init__(self, what: str, where: str) -> None:
        self.what, self.where = what, where

    def fail(self, field: str, problem: str) -> None:
        raise ModelError(f"The model's {self.what} was refused ({self.where}): '{field}' {problem}. "
                         "A model package is data; LiverPlan only accepts the settings nnU-Net v2 writes.")

    # typed getters ---------------------------------------------------------------------------------------
    def mapping(self, value: Any, field: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(field, f"must be a JSON object, not {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(field, "has a key that is not text")
        return value

    def integer(self, value: Any, field: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            # nnU-Net writes some sizes as floats (median_image_size_in_voxels): only whole numbers pass here
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            else:
                self.fail(field, f"must be a whole number, not {_kind(value)}")
        if not low <= value <= high:
            self.fail(field, f"is {value}, outside the range {low} to {high}")
        return int(value)

    def number(self, value: Any, field: str, low: float, high: float, open_low: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, f"must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            self.fail(field, f"is {value}, not a finite number")
        if value < low or value > high or (open_low and value <= low):
            self.fail(field, f"is {value}, outside the range {'above ' if open_low else ''}{low} to {high}")
        return float(value)

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, not {_kind(value)}")
        return value

    def text(self, value: Any, field: str, max_len: int = MAX_TEXT) -> str:
        if not isinstance(value, str):
            self.fail(field, f"must be text, not {_kind(value)}")
        if len(value) > max_len:
            self.fail(field, f"is {len(value)} characters long (at most {max_len})")
        return value

    def one_of(self, value: Any, field: str, allowed: Iterable[str]) -> str:
        allowed = list(allowed)
        if not isinstance(value, str) or value not in allowed:
            shown = repr(value)[:120] if isinstance(value, str) else _kind(value)
            self.fail(field, f"is {shown}, which is not one of the names nnU-Net uses ({', '.join(allowed[:8])}"
                             f"{', ...' if len(allowed) > 8 else ''})")
        return value

    def seq(self, value: Any, field: str, length: Optional[int] = None, min_len: int = 0,
            max_len: int = 10_000) -> Sequence:
        if not isinstance(value, (list, tuple)):
            self.fail(field, f"must be a list, not {_kind(value)}")
        if length is not None and len(value) != length:
            self.fail(field, f"has {len(value)} entries where {length} are needed")
        if not min_len <= len(value) <= max_len:
            self.fail(field, f"has {len(value)} entries (allowed: {min_len} to {max_len})")
        return value

    def int_list(self, value: Any, field: str, low: int, high: int, length: Optional[int] = None,
                 min_len: int = 0, max_len: int = 10_000) -> list[int]:
        return [self.integer(v, f"{field}[{i}]", low, high)
                for i, v in enumerate(self.seq(value, field, length, min_len, max_len))]

    def num_list(self, value: Any, field: str, low: float, high: float, length: Optional[int] = None,
                 open_low: bool = False) -> list[float]:
        return [self.number(v, f"{field}[{i}]", low, high, open_low)
                for i, v in enumerate(self.seq(value, field, length))]

    def typed(self, value: Any, field: str, spec: Any) -> None:
        """One value against a spec: bool, (low, high) numbers, a tuple of allowed strings, (bool, None)."""
        if spec is bool:
            self.boolean(value, field)
        elif spec == (bool, None):
            if value is not None:
                self.boolean(value, field)
        elif isinstance(spec, tuple) and spec and all(isinstance(s, str) for s in spec):
            self.one_of(value, field, spec)
        elif isinstance(spec, tuple) and len(spec) == 2:
            lo, hi = spec
            if isinstance(lo, int) and isinstance(hi, int):
                self.integer(value, field, lo, hi)
            else:
                self.number(value, field, lo, hi)
        else:  # pragma: no cover - a programming error in the tables above
            raise AssertionError(spec)

    def kwargs(self, value: Any, field: str, allowed: Mapping[str, Any], none_ok: bool = True) -> None:
        if value is None and none_ok:
            return
        self.mapping(value, field)
        for k, v in value.items():
            if k not in allowed:
                self.fail(f"{field}.{k}", f"is not a setting LiverPlan accepts here "
                                          f"(accepted: {', '.join(allowed)})")
            self.typed(v, f"{field}.{k}", allowed[k])


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value[:60]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------
def resolve_configuration(plans: Mapping, name: str, where: str = "plans.json") -> dict:
    """A configuration with nnU-Net's (shallow, recursive) ``inherits_from`` resolved; a missing parent or a
    cycle is refused."""
    c = _Checker("plans.json", where)
    confs = c.mapping(plans.get("configurations"), "configurations")
    chain: list[str] = []
    cur = name
    while True:
        if cur in chain:
            c.fail(f"configurations.{name}.inherits_from", f"loops ({' -> '.join(chain + [cur])})")
        if cur not in confs:
            c.fail(f"configurations.{chain[-1]}.inherits_from" if chain else f"configurations.{name}",
                   f"names '{cur}', which the plans do not describe" if chain else "does not exist")
        chain.append(cur)
        conf = c.mapping(confs[cur], f"configurations.{cur}")
        parent = conf.get("inherits_from")
        if parent is None:
            break
        cur = c.text(parent, f"configurations.{cur}.inherits_from", 100)
    merged: dict = {}
    for nm in reversed(chain):
        merged.update(confs[nm])
    merged.pop("inherits_from", None)
    return merged


def check_plans(plans: Any, configuration: Optional[str] = None, where: str = "plans.json") -> None:
    """Refuse (ModelError naming the field) a plans.json nnU-Net should not see.

    Always checks the top level (names of the reader, label manager, transposes, intensity statistics,
    that ``configurations`` is an object of objects); with ``configuration`` also that configuration (after
    ``inherits_from``): network class and ops from the allow-lists, typed and ranged numbers, list lengths.
    """
    c = _Checker("plans.json", where)
    c.mapping(plans, "plans.json")
    confs = c.mapping(plans.get("configurations"), "configurations")
    if not confs:
        c.fail("configurations", "is empty")
    for nm, conf in confs.items():
        if not _CONF_NAME_RE.match(nm):
            c.fail(f"configurations.{nm[:60]}", "is not a valid configuration name")
        c.mapping(conf, f"configurations.{nm}")
    for key in ("dataset_name", "plans_name", "experiment_planner_used"):
        if key in plans:
            c.text(plans[key], key, 300)
    if "image_reader_writer" in plans:
        c.one_of(plans["image_reader_writer"], "image_reader_writer", READER_WRITERS)
    if "label_manager" in plans:
        c.one_of(plans["label_manager"], "label_manager", LABEL_MANAGERS)
    for key in ("transpose_forward", "transpose_backward"):
        if key in plans:
            t = c.int_list(plans[key], key, 0, 2, min_len=2)
            if sorted(t) != list(range(len(t))) or len(t) > 3:
                c.fail(key, f"is {t}, not an order of the axes (e.g. [0, 1, 2])")
    for key in ("original_median_spacing_after_transp",):
        if key in plans:
            c.num_list(plans[key], key, 0.0, 1e6, open_low=True)
    if "original_median_shape_after_transp" in plans:
        c.num_list(plans["original_median_shape_after_transp"], "original_median_shape_after_transp", 0.0, 1e7)
    for key in ("foreground_intensity_properties_per_channel", "foreground_intensity_properties_by_modality"):
        if key in plans:
            props = c.mapping(plans[key], key)
            for ch, stats in props.items():
                c.mapping(stats, f"{key}.{ch}")
                for sk, sv in stats.items():
                    c.number(sv, f"{key}.{ch}.{sk}", -1e12, 1e12)
    if configuration is not None:
        _check_configuration(c, resolve_configuration(plans, configuration, where), configuration)


def _check_configuration(c: _Checker, conf: dict, name: str) -> None:
    f = f"configurations.{name}"
    if "patch_size" not in conf:
        c.fail(f"{f}.patch_size", "is missing")
    patch = c.int_list(conf["patch_size"], f"{f}.patch_size", 1, 2048, min_len=2)
    if len(patch) > 3:
        c.fail(f"{f}.patch_size", f"has {len(patch)} entries (2 or 3 expected)")
    dim = len(patch)
    if math.prod(patch) > MAX_PATCH_VOXELS:
        c.fail(f"{f}.patch_size", f"is {patch}: {math.prod(patch):,} voxels per patch, more than any nnU-Net model "
                                  f"uses (at most {MAX_PATCH_VOXELS:,})")
    if "spacing" in conf:
        c.num_list(conf["spacing"], f"{f}.spacing", 0.0, 1e4, length=dim, open_low=True)
    if "batch_size" in conf:
        c.integer(conf["batch_size"], f"{f}.batch_size", 1, 100_000)
    if "median_image_size_in_voxels" in conf:
        c.num_list(conf["median_image_size_in_voxels"], f"{f}.median_image_size_in_voxels", 0.0, 1e7, length=dim)
    for key in ("data_identifier",):
        if key in conf:
            c.text(conf[key], f"{f}.{key}", 300)
    if "preprocessor_name" in conf:
        c.one_of(conf["preprocessor_name"], f"{f}.preprocessor_name", PREPROCESSORS)
    if "normalization_schemes" in conf:
        norms = c.seq(conf["normalization_schemes"], f"{f}.normalization_schemes", min_len=1, max_len=64)
        for i, n in enumerate(norms):
            c.one_of(n, f"{f}.normalization_schemes[{i}]", NORMALIZATIONS)
        if "use_mask_for_norm" in conf:
            masks = c.seq(conf["use_mask_for_norm"], f"{f}.use_mask_for_norm", length=len(norms))
            for i, m in enumerate(masks):
                c.boolean(m, f"{f}.use_mask_for_norm[{i}]")
    for kind in ("data", "seg", "probabilities"):
        fn_key, kw_key = f"resampling_fn_{kind}", f"resampling_fn_{kind}_kwargs"
        if fn_key in conf:
            c.one_of(conf[fn_key], f"{f}.{fn_key}", RESAMPLING_FNS)
        if kw_key in conf:
            c.kwargs(conf[kw_key], f"{f}.{kw_key}", RESAMPLING_KWARGS, none_ok=False)
    if "batch_dice" in conf:
        c.boolean(conf["batch_dice"], f"{f}.batch_dice")
    for key in ("previous_stage", "next_stage"):
        v = conf.get(key)
        if v is not None:
            for i, s in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                c.text(s, f"{f}.{key}", 100)
    if "architecture" in conf:
        _check_architecture(c, conf["architecture"], f"{f}.architecture", dim)
    elif "UNet_class_name" in conf:
        _check_old_format(c, conf, f, dim)
    else:
        c.fail(f"{f}.architecture", "is missing (no network is described)")


def _check_architecture(c: _Checker, arch: Any, f: str, dim: int) -> None:
    c.mapping(arch, f)
    for k in arch:
        if k not in ("network_class_name", "arch_kwargs", "_kw_requires_import"):
            c.fail(f"{f}.{k}", "is not part of an nnU-Net architecture description")
    c.one_of(arch.get("network_class_name"), f"{f}.network_class_name", NETWORK_CLASSES)
    cls = NETWORK_CLASSES[arch["network_class_name"]]
    kw = c.mapping(arch.get("arch_kwargs"), f"{f}.arch_kwargs")
    req = c.seq(arch.get("_kw_requires_import", []), f"{f}._kw_requires_import", max_len=len(IMPORTED_KWARGS))
    for i, r in enumerate(req):
        c.one_of(r, f"{f}._kw_requires_import[{i}]", IMPORTED_KWARGS)
        if r not in kw:
            c.fail(f"{f}._kw_requires_import[{i}]", f"names '{r}', which arch_kwargs does not have")
    fk = f"{f}.arch_kwargs"
    blocks_key = "n_conv_per_stage" if cls == "PlainConvUNet" else "n_blocks_per_stage"
    allowed = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", blocks_key,
               "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
               "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "deep_supervision"}
    allowed |= {"nonlin_first"} if cls == "PlainConvUNet" else {"block", "bottleneck_channels", "stem_channels"}
    for k in kw:
        if k not in allowed:
            c.fail(f"{fk}.{k}", f"is not a setting of {cls} that LiverPlan accepts")
    for k in ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", blocks_key,
              "n_conv_per_stage_decoder"):
        if k not in kw:
            c.fail(f"{fk}.{k}", "is missing")
    n = c.integer(kw["n_stages"], f"{fk}.n_stages", 1, 16)

    def per_stage(key: str, low: int, high: int, length: int) -> list[int]:
        v = kw[key]
        if isinstance(v, int) and not isinstance(v, bool):
            return [c.integer(v, f"{fk}.{key}", low, high)] * length
        return c.int_list(v, f"{fk}.{key}", low, high, length=length)

    def per_stage_axes(key: str, low: int, high: int) -> list[list[int]]:
        v = kw[key]
        if isinstance(v, int) and not isinstance(v, bool):
            return [[c.integer(v, f"{fk}.{key}", low, high)] * dim] * n
        rows = c.seq(v, f"{fk}.{key}", length=n)
        out = []
        for i, row in enumerate(rows):
            if isinstance(row, int) and not isinstance(row, bool):
                out.append([c.integer(row, f"{fk}.{key}[{i}]", low, high)] * dim)
            else:
                out.append(c.int_list(row, f"{fk}.{key}[{i}]", low, high, length=dim))
        return out

    features = per_stage("features_per_stage", 1, 8192, n)
    kernels = per_stage_axes("kernel_sizes", 1, 15)
    per_stage_axes("strides", 1, 16)
    convs = per_stage(blocks_key, 1, 64, n)
    per_stage("n_conv_per_stage_decoder", 1, 64, n - 1)
    for key in ("conv_bias", "deep_supervision", "nonlin_first"):
        if key in kw:
            c.boolean(kw[key], f"{fk}.{key}")
    for key in ("bottleneck_channels", "stem_channels"):
        if kw.get(key) is not None:
            if isinstance(kw[key], (list, tuple)):
                c.int_list(kw[key], f"{fk}.{key}", 1, 8192, length=n)
            else:
                c.integer(kw[key], f"{fk}.{key}", 1, 8192)
    # every named op: from the allow-list, of the right dimension, and imported only where nnU-Net imports it
    for key, names in IMPORTED_KWARGS.items():
        if key not in kw:
            continue
        v = kw[key]
        if v is None and key in ("norm_op", "dropout_op", "nonlin"):
            continue
        c.one_of(v, f"{fk}.{key}", names)
        if key not in req:
            c.fail(f"{fk}.{key}", "names a class but is not listed in _kw_requires_import (nnU-Net would pass the "
                                  "text on unchanged)")
        op = names[v]
        if op[-2:] in ("1d", "2d", "3d") and key in ("conv_op", "norm_op", "dropout_op") and int(op[-2]) != dim:
            c.fail(f"{fk}.{key}", f"is {op}, which does not fit the {dim}D patch size")
    for key, spec in OP_KWARGS.items():
        if key in kw:
            c.kwargs(kw[key], f"{fk}.{key}", spec)
    # a bound on the network's size before anything is allocated (weights of the encoder and decoder convs)
    params, prev = 0, 1
    for i in range(n):
        kvol = math.prod(kernels[i])
        params += convs[i] * features[i] * max(prev, features[i]) * kvol
        prev = features[i]
    params *= 2
    if params > MAX_PARAMETERS:
        c.fail(f"{fk}.features_per_stage", f"describes a network of about {params:,} weights, more than any "
                                           f"nnU-Net model (at most {MAX_PARAMETERS:,})")


def _check_old_format(c: _Checker, conf: dict, f: str, dim: int) -> None:
    """nnU-Net 2.0 plans (TotalSegmentator v2.0 releases): nnU-Net rebuilds the architecture from these."""
    c.one_of(conf["UNet_class_name"], f"{f}.UNet_class_name", OLD_FORMAT_CLASSES)
    for key in ("UNet_base_num_features", "unet_max_num_features", "n_conv_per_stage_encoder",
                "n_conv_per_stage_decoder", "pool_op_kernel_sizes", "conv_kernel_sizes"):
        if key not in conf:
            c.fail(f"{f}.{key}", "is missing")
    base = c.integer(conf["UNet_base_num_features"], f"{f}.UNet_base_num_features", 1, 8192)
    top = c.integer(conf["unet_max_num_features"], f"{f}.unet_max_num_features", 1, 8192)
    enc = c.int_list(conf["n_conv_per_stage_encoder"], f"{f}.n_conv_per_stage_encoder", 1, 64, min_len=1)
    n = len(enc)
    if n > 16:
        c.fail(f"{f}.n_conv_per_stage_encoder", f"has {n} stages (at most 16)")
    c.int_list(conf["n_conv_per_stage_decoder"], f"{f}.n_conv_per_stage_decoder", 1, 64, length=n - 1)
    kernels = []
    for key, hi in (("pool_op_kernel_sizes", 16), ("conv_kernel_sizes", 15)):
        rows = c.seq(conf[key], f"{f}.{key}", length=n)
        got = [c.int_list(r, f"{f}.{key}[{i}]", 1, hi, length=dim) for i, r in enumerate(rows)]
        if key == "conv_kernel_sizes":
            kernels = got
    if "num_pool_per_axis" in conf:
        c.int_list(conf["num_pool_per_axis"], f"{f}.num_pool_per_axis", 0, 16, length=dim)
    params, prev = 0, 1
    for i in range(n):
        feat = min(base * 2 ** i, top)
        params += enc[i] * feat * max(prev, feat) * math.prod(kernels[i])
        prev = feat
    if 2 * params > MAX_PARAMETERS:
        c.fail(f"{f}.UNet_base_num_features", "describes a network larger than any nnU-Net model")


# ---------------------------------------------------------------------------------------------------------
def check_dataset_json(ds: Any, where: str = "dataset.json") -> None:
    """Refuse a dataset.json with fields of the wrong type (labels, channels, file ending, reader name)."""
    c = _Checker("dataset.json", where)
    c.mapping(ds, "dataset.json")
    labels = c.mapping(ds.get("labels", {}), "labels")
    if len(labels) > 1000:
        c.fail("labels", f"has {len(labels)} entries (at most 1000)")
    for name, v in labels.items():
        c.text(name, "labels", 200)
        if isinstance(v, (list, tuple)):        # region-based: refused in words by models.load_model
            c.int_list(v, f"labels.{name}", 0, 65535, min_len=1, max_len=1000)
        else:
            c.integer(v, f"labels.{name}", 0, 65535)
    values = [v for v in labels.values() if not isinstance(v, (list, tuple))]
    if len(set(values)) != len(values):
        c.fail("labels", "gives the same value to two labels")
    for key in ("channel_names", "modality"):
        if key in ds:
            chans = c.mapping(ds[key], key)
            if len(chans) > 64:
                c.fail(key, f"has {len(chans)} entries (at most 64)")
            for k, v in chans.items():
                c.text(v, f"{key}.{k}", 200)
    if "numTraining" in ds:
        c.integer(ds["numTraining"], "numTraining", 0, 10_000_000)
    if "file_ending" in ds:
        if not isinstance(ds["file_ending"], str) or not _FILE_ENDING_RE.match(ds["file_ending"]):
            c.fail("file_ending", f"is {_kind(ds['file_ending'])}, not a file ending such as '.nii.gz'")
    if "overwrite_image_reader_writer" in ds:
        c.one_of(ds["overwrite_image_reader_writer"], "overwrite_image_reader_writer", READER_WRITERS)
    if ds.get("regions_class_order") is not None:
        c.int_list(ds["regions_class_order"], "regions_class_order", 0, 65535, max_len=1000)
    for key in ("name", "description", "reference", "licence", "license", "release", "version"):
        if key in ds and ds[key] is not None and not isinstance(ds[key], (int, float)):
            c.text(ds[key], key)


def check_card(card: Any, where: str = "liverplan_model.json") -> None:
    """Refuse a LiverPlan model card whose fields are of the wrong type (flags must be true/false)."""
    c = _Checker("model card", where)
    c.mapping(card, "liverplan_model.json")
    for key in ("name", "version", "description"):
        if key in card and card[key] is not None:
            c.text(card[key], key, 2000 if key != "description" else MAX_TEXT)
    for key in ("demo", "not_for_clinical_use"):
        if key in card:
            c.boolean(card[key], key)
    if "training_data" in card and not isinstance(card["training_data"], (str, Mapping, list)):
        c.fail("training_data", f"must be text, not {_kind(card['training_data'])}")
    if len(repr(card)) > 10 * MAX_TEXT:
        c.fail("liverplan_model.json", "is too large for a model card")


def check_checkpoint(ckpt: Mapping, path: Path) -> None:
    """Refuse a checkpoint whose ``trainer_name`` is not a class name or whose ``init_args`` (plans,
    dataset.json, configuration) or mirroring axes are not what nnU-Net writes."""
    where = f"{path.parent.name}/{path.name}"
    c = _Checker("checkpoint", where)
    if "trainer_name" in ckpt:
        tn = ckpt["trainer_name"]
        if not isinstance(tn, str) or not _TRAINER_RE.match(tn):
            c.fail("trainer_name", f"is {_kind(tn)}, not the name of an nnU-Net trainer class")
    axes = ckpt.get("inference_allowed_mirroring_axes")
    if axes is not None:
        got = c.int_list(axes, "inference_allowed_mirroring_axes", 0, 2, max_len=3)
        if len(set(got)) != len(got):
            c.fail("inference_allowed_mirroring_axes", "repeats an axis")
    init = ckpt.get("init_args")
    if init is None:
        return
    c.mapping(init, "init_args")
    conf = init.get("configuration")
    if conf is not None:
        if not isinstance(conf, str) or not _CONF_NAME_RE.match(conf):
            c.fail("init_args.configuration", f"is {_kind(conf)}, not a configuration name")
    if "fold" in init and init["fold"] is not None and not isinstance(init["fold"], (int, str)):
        c.fail("init_args.fold", f"is {_kind(init['fold'])}, not a fold number")
    if init.get("plans") is not None:
        plans = init["plans"]
        confs = plans.get("configurations") if isinstance(plans, Mapping) else None
        used = conf if isinstance(conf, str) and isinstance(confs, Mapping) and conf in confs else None
        check_plans(plans, used, where=f"{where}, init_args.plans")
    if init.get("dataset_json") is not None:
        check_dataset_json(init["dataset_json"], where=f"{where}, init_args.dataset_json")
