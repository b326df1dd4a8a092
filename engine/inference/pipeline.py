"""Segment a Case with one or more nnU-Net v2 models, in-process, with progress, cancel and any device.

Stages (the ``stage`` names given to ``progress``): "load model" (once per model/device/mode, cached),
"crop", "preprocess" (nnU-Net's CT preprocessing in torch, one step per slab; or nnU-Net's own),
"predict" (one step per sliding-window tile and fold), "resample" (torch, on the compute device, one
step per slab) and "postprocess".

The model sees the CT as the image reader it was trained with would give it (``nnUNetv2_predict`` on the
CT's file: as stored for SimpleITKIO/NibabelIO, reoriented to RAS for NibabelIOWithReorient, see
engine.inference.orientation); the result is brought back to the case's canonical grid.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..case import Case
from ..errors import InputError, ModelError
from ..labels import Label
from ..model_safety import check_dataset_json, check_plans
from ..models import ModelInfo, load_checkpoint
from ..postprocess import PostprocessOptions, postprocess
from ..progress import CancelToken, Cancelled, ProgressCallback, check, no_progress
from .crop import BODY_THRESHOLD_HU, body_bbox, slices_to_list
from .orientation import model_reader, model_view

log = logging.getLogger(__name__)

MODES = ("fast", "accurate")
PREPROCESSING = ("torch", "nnunet")
STAGES = ("load model", "crop", "preprocess", "predict", "resample", "postprocess")

#: How several models' label maps are combined (written down, shown in provenance).
PRECEDENCE_RULE = ("Combining models: lesions (CRLM) > hepatic veins / portal vein / IVC > vessels without the "
                   "portal/hepatic split > liver parenchyma; within the same rank the later model in the list "
                   "wins; background never overwrites a label.")
# Unsplit vessels rank below the named ones: a cardiac model's portal trunk or IVC keeps its name where an
# unsplit vessel model overlaps it, and is then the seed the split starts from.
_RANK = {Label.PARENCHYMA: 0, Label.VESSEL_UNASSIGNED: 1, Label.PORTAL_VEIN: 2, Label.HEPATIC_VEINS: 2,
         Label.IVC: 2, Label.CRLM: 3}


@dataclass
class SegmentationResult:
    """What :func:`segment` returns.

    labels: uint8 (z, y, x) on the case's canonical grid (engine.labels values).
    """

    labels: np.ndarray
    device_used: str
    mode: str
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: further per-voxel maps on the same grid, e.g. "couinaud": uint8 Couinaud segment 1..8 (0: none), from a
    #: model with liver_segment_N labels (TotalSegmentator's liver_segments) for the planning segment map
    extra_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label_source(self) -> str:
        names = [m["card"]["name"] for m in self.provenance.get("models", [])]
        return "model: " + " + ".join(names)


# ------------------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    predictor: Any
    trainer_name: str
    folds: list[str]
    warnings: list[str]


_CACHE: dict[tuple, _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget loaded models (frees their memory), and nnU-Net's cached Gaussian tile weights (its
    compute_gaussian keeps the last two on the device they were made for)."""
    with _CACHE_LOCK:
        _CACHE.clear()
    sw = sys.modules.get("nnunetv2.inference.sliding_window_prediction")   # never import torch just for this
    if sw is not None and hasattr(getattr(sw, "compute_gaussian", None), "cache_clear"):
        sw.compute_gaussian.cache_clear()


def _mode_settings(model: ModelInfo, mode: str) -> dict:
    if mode not in MODES:
        raise ModelError(f"Unknown mode '{mode}': choose 'fast' or 'accurate'.")
    if mode == "fast":
        fold = "0" if "0" in model.folds else model.folds[0]
        return {"folds": [fold], "use_mirroring": False, "tile_step_size": 0.75}
    return {"folds": list(model.folds), "use_mirroring": True, "tile_step_size": 0.5}


def _load(model: ModelInfo, device, mode: str, progress: ProgressCallback, on_device: bool = True,
          half: bool = False, cancel: Optional[CancelToken] = None) -> _Loaded:
    # data, never code: the plans as nnU-Net will see them (a ModelInfo may have been built elsewhere), checked
    # on every run, also when a model of the same folder is cached (its plans may differ from this one's)
    check_plans(model.plans, model.configuration, where=str(model.path / "plans.json"))
    check_dataset_json(model.dataset_json, where=str(model.path / "dataset.json"))
    key = (str(model.path), model.checkpoint_name, tuple(model.folds), str(device), mode, on_device, half,
           json.dumps(model.plans, sort_keys=True, default=str))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        progress("load model", 1, 1)
        return hit
    import torch

    from .predictor import predictor_class

    settings = _mode_settings(model, mode)
    folds = settings["folds"]
    progress("load model", 0, len(folds) + 1)
    params, trainer_name, mirror_axes = [], "nnUNetTrainer", None
    for i, f in enumerate(folds):
        check(cancel)
        ckpt = load_checkpoint(model.path / f"fold_{f}" / model.checkpoint_name)
        if i == 0:
            trainer_name = str(ckpt.get("trainer_name", "nnUNetTrainer"))
            mirror_axes = ckpt.get("inference_allowed_mirroring_axes")
        params.append(ckpt["network_weights"])
        progress("load model", i + 1, len(folds) + 1)
    warnings: list[str] = []
    plans_manager, configuration_manager = plans_managers(model)
    label_manager = plans_manager.get_label_manager(model.dataset_json)
    try:
        network = _build_network(trainer_name, plans_manager, configuration_manager,
                                  label_manager.num_segmentation_heads, warnings)
        network.load_state_dict(params[0])
    except (RuntimeError, KeyError, TypeError, ValueError, ImportError, AttributeError) as exc:
        raise ModelError(f"The weights of model '{model.name}' do not fit the network its plans.json describes "
                         f"({str(exc).splitlines()[0][:200]}); the model folder is inconsistent.") from None
    with contextlib.redirect_stdout(io.StringIO()):   # nnU-Net prints a note for every non-CUDA device
        predictor = predictor_class()(tile_step_size=settings["tile_step_size"], use_gaussian=True,
                                      use_mirroring=settings["use_mirroring"] and mirror_axes is not None,
                                      perform_everything_on_device=on_device and device.type == "cuda",
                                      device=device, verbose=False, verbose_preprocessing=False,
                                      allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, params, model.dataset_json,
                                    trainer_name, mirror_axes)
    if half:
        predictor.network = predictor.network.half()
        predictor.network_dtype = torch.float16
    predictor.network = predictor.network.to(device)
    predictor.network.eval()
    predictor.install_cancel_hooks()
    if device.type == "cpu":
        predictor.install_channels_last_norms()
    predictor.current_parameters = params[0]
    loaded = _Loaded(predictor, trainer_name, folds, warnings)
    with _CACHE_LOCK:
        # keep one entry per model (a device/mode switch replaces it) so GPU memory is not hoarded
        for k in [k for k in _CACHE if k[0] == key[0]]:
            del _CACHE[k]
        _CACHE[key] = loaded
    progress("load model", len(folds) + 1, len(folds) + 1)
    return loaded


#: nnU-Net's warning for plans written before its 'architecture' entry (TotalSegmentator's v2.0 releases); it
#: then rebuilds the network description itself, which is all that is needed.
OLD_PLANS_WARNING = "Detected old nnU-Net plans format"


def is_old_plans_format(model: ModelInfo) -> bool:
    """True when the model's configuration has no ``architecture`` entry (nnU-Net's old plans format)."""
    from ..models import _configuration_dict

    return "architecture" not in _configuration_dict(model.plans, model.configuration)


def plans_managers(model: ModelInfo):
    """nnU-Net's (PlansManager, ConfigurationManager) for the model's configuration. nnU-Net's warning about
    the old plans format is not repeated on every run: it is logged once per model load and recorded in the
    run's provenance (``plans_format``)."""
    import warnings as _warnings

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with _warnings.catch_warnings():
        _warnings.filterwarnings("ignore", message=OLD_PLANS_WARNING)
        pm = PlansManager(model.plans)
        cm = pm.get_configuration(model.configuration)
    if is_old_plans_format(model):
        log.info("model %s uses nnU-Net's old plans format; its network description was rebuilt by nnU-Net",
                 model.path)
    return pm, cm


def _build_network(trainer_name: str, plans_manager, configuration_manager, n_out: int, warnings: list[str]):
    """The network as the model's trainer builds it (for the stock nnUNetTrainer: straight from the plans,
    which is all its build_network_architecture does, without importing the training machinery)."""
    if trainer_name == "nnUNetTrainer":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        return get_network_from_plans(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      1, n_out, allow_init=True, deep_supervision=False)
    trainer_class = _trainer_class(trainer_name, warnings)
    return trainer_class.build_network_architecture(plans_manager, configuration_manager, 1, n_out,
                                                    enable_deep_supervision=False)


def _trainer_class(trainer_name: str, warnings: list[str]):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        cls = recursive_find_trainer_class_by_name(trainer_name)
        if cls is not None:
            return cls
    except Exception as exc:  # noqa: BLE001 - nnU-Net raises a bare RuntimeError when not found
        log.info("trainer %s not found: %s", trainer_name, exc)
    warnings.append(f"The model was trained with '{trainer_name}', which is not installed here; its network was "
                    "built with nnU-Net's standard builder from plans.json.")
    return nnUNetTrainer


# ------------------------------------------------------------------------------------------------
def _predict_one(image_src: np.ndarray, spacing_src: Sequence[float], model: ModelInfo, device,
                 opts: "SegmentOptions", progress: ProgressCallback, cancel: Optional[CancelToken],
                 record: "RunRecord", prov: dict, two_stage: Optional[dict] = None) -> np.ndarray:
    """Model output values (uint8, the model's view of the CT, full grid of ``image_src``) for one model; None
    when the image holds no body."""
    import torch

    from .device import empty_device_cache, is_out_of_memory

    warnings, timings = record.warnings, record.timings
    t0 = time.perf_counter()
    check(cancel)
    # --- crop ----------------------------------------------------------------------------------
    progress("crop", 0, 1)
    if opts.crop_to_body:
        margin = [max(1, int(round(8.0 / s))) for s in spacing_src]   # 8 mm around the body
        box = body_bbox(image_src, margin_vox=margin)
        if box is None:
            return None  # type: ignore[return-value]  # caller warns "no body found"
    else:
        if not bool((image_src > BODY_THRESHOLD_HU).any()):
            return None  # type: ignore[return-value]  # caller warns "no body found"
        box = tuple(slice(0, n) for n in image_src.shape)
    sub = image_src[box]
    prov["crop_zyx"] = slices_to_list(box)
    progress("crop", 1, 1)
    timings["crop"] = timings.get("crop", 0.0) + time.perf_counter() - t0

    attempts = [dict(device=device, on_device=True, half=False)]
    if device.type != "cpu":
        attempts += [dict(device=device, on_device=False, half=True), dict(device=torch.device("cpu"),
                                                                          on_device=False, half=False)]
    last_exc: Optional[BaseException] = None
    for k, att in enumerate(attempts):
        try:
            labels_sub = _predict_crop(sub, spacing_src, model, att, opts, progress, cancel, record, prov, two_stage)
            if k > 0:
                warnings.append(
                    "The GPU ran out of memory; the prediction was repeated "
                    + ("with a smaller memory footprint (results in host memory, half precision)."
                       if att["device"].type != "cpu" else "on the CPU (slower)."))
            prov["device"] = str(att["device"])
            break
        except Cancelled:
            raise
        except BaseException as exc:  # noqa: BLE001 - OOM is a RuntimeError/MemoryError of several kinds
            if not is_out_of_memory(exc) or k == len(attempts) - 1:
                if is_out_of_memory(exc):
                    raise ModelError("There is not enough memory to run this model on this CT, even on the CPU; "
                                     "close other programs or use a smaller model.") from None
                raise
            log.warning("out of memory on %s (%s); retrying with a smaller footprint", att["device"], exc)
            last_exc = exc
            clear_model_cache()
            empty_device_cache(att["device"])
    else:  # pragma: no cover - loop always breaks or raises
        raise ModelError(f"Prediction failed: {last_exc}")
    full = np.zeros(image_src.shape, dtype=np.uint8)
    full[box] = labels_sub
    if "uncertainty" in record.maps and record.maps["uncertainty"].shape == labels_sub.shape:
        full_u = np.zeros(image_src.shape, dtype=np.uint8)
        full_u[box] = record.maps.pop("uncertainty")
        record.maps["uncertainty"] = full_u
    return full


def _predict_crop(sub: np.ndarray, spacing_src, model: ModelInfo, att: dict, opts: "SegmentOptions",
                  progress: ProgressCallback, cancel, record: "RunRecord", prov: dict,
                  two_stage: Optional[dict] = None) -> np.ndarray:
    """Model output values (uint8, source orientation) for the cropped source array ``sub``.

    two_stage: None, or the two-stage settings :func:`segment` builds ("liver_values", "roi_values": model
    values of the liver / of every structure, "margin_mm", and the fast pass's "fast_fold",
    "fast_fold_index", "fast_step"): see :func:`_two_stage_logits`."""
    import torch

    from .device import cpu_has_native_bf16, empty_device_cache, is_out_of_memory
    from .resample import resample_logits_to_labels

    warnings, timings = record.warnings, record.timings
    mode, preprocessing, cpu_bf16, skip_empty_tiles = opts.mode, opts.preprocessing, opts.cpu_bf16, opts.skip_empty_tiles
    device = att["device"]
    t0 = time.perf_counter()
    loaded = _load(model, device, mode, progress, on_device=att["on_device"], half=att["half"], cancel=cancel)
    warnings.extend(w for w in loaded.warnings if w not in warnings)
    pred = loaded.predictor
    # CPU: float32 in channels_last_3d layout with copy-free instance norms (~2x nnU-Net's float32 pass,
    # nnU-Net's numbers); bfloat16 autocast only on request: with the demo model 0.2 on the IRCADb CT it
    # dropped the hepatic veins' Dice against nnUNetv2_predict to 0.983 for ~1.2x more speed.
    on_cpu = device.type == "cpu"
    bf16 = bool(on_cpu and cpu_bf16)
    # the run's own values, passed to the predictor as an argument (the cached predictor is not changed)
    run = base_run(pred, cancel, cpu_bf16=bf16,
                   cpu_batch=_cpu_batch(pred.configuration_manager, bf16) if on_cpu else 1)
    if bf16 and not cpu_has_native_bf16():
        msg = ("This CPU has no native bfloat16 arithmetic; bfloat16 was used as requested but is likely slower "
               "than float32 here.")
        if msg not in warnings:
            warnings.append(msg)
    if on_cpu:
        prov["cpu_batch"] = run.cpu_batch
    if pred.channels_last != on_cpu:
        pred.network.to(memory_format=torch.channels_last_3d if on_cpu else torch.contiguous_format)
        pred.channels_last = on_cpu
    prov["network_precision"] = "bfloat16 autocast (CPU)" if run.cpu_bf16 else str(
        pred.network_dtype or torch.float32).replace("torch.", "")
    timings["load model"] = timings.get("load model", 0.0) + time.perf_counter() - t0
    check(cancel)

    # --- preprocess ------------------------------------------------------------------------------
    # "torch": nnU-Net's steps, geometry and spline resampling as torch matrix products in chunks on the
    # compute device (interruptible, faster); "nnunet": nnU-Net's own run_case_npy (scipy, not interruptible).
    t0 = time.perf_counter()
    pm, cm = pred.plans_manager, pred.configuration_manager
    why_not = _torch_preprocessing_unsupported(pm, cm) if preprocessing == "torch" else "not requested"
    if why_not is None:
        from .preprocess import preprocess_ct

        try:
            data, props = preprocess_ct(sub, spacing_src, pm, cm, device=device if att["on_device"] else None,
                                        cancel=cancel, progress=progress)
            prov["preprocessing"] = "torch (nnU-Net's CT normalisation, crop and spline resampling as matrices)"
        except ValueError as exc:
            why_not = str(exc)
    if why_not is not None:
        if preprocessing == "torch":
            log.info("nnU-Net's own preprocessing used: %s", why_not)
        progress("preprocess", 0, 1)
        preprocessor = cm.preprocessor_class(verbose=False)
        # run_case_npy makes its own float32 copy, so the int16 crop goes in as it is
        data, _, props = preprocessor.run_case_npy(sub[None], None,
                                                   {"spacing": [float(s) for s in spacing_src]}, pm, cm,
                                                   pred.dataset_json)
        data = torch.from_numpy(data)
        progress("preprocess", 1, 1)
        prov["preprocessing"] = "nnU-Net (run_case_npy)"
    check(cancel)
    timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - t0
    patch = list(cm.patch_size)
    short = [(name, int(s), int(p)) for name, s, p in zip(("head-foot", "front-back", "left-right"),
                                                             data.shape[1:], patch) if s < p]
    if short:
        what = "; ".join(f"{name} {s} voxels, the patch {p}" for name, s, p in short)
        msg = (f"The CT region is shorter than the model's patch along {', '.join(n for n, _, _ in short)} "
               f"({what}, at the model's spacing); it was padded, so results near its edges may be less reliable.")
        if msg not in warnings:
            warnings.append(msg)

    # --- predict ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    body = _body_mask_model_grid(sub, data.shape, props, pm) if skip_empty_tiles else None
    data_t = data
    if att["half"]:
        data_t = data_t.half()
    del data
    if two_stage is not None and mode == "accurate":
        logits, n_tiles, run = _two_stage_logits(pred, data_t, body, patch, cm, two_stage, progress, prov, run)
    else:
        run = run.but(tile_filter=_tile_filter(body, patch),
                      tile_callback=lambda done, total: progress("predict", done, total))
        n_tiles = pred.count_tiles(data_t.shape, run)
        progress("predict", 0, n_tiles * len(run.parameters))
        logits = pred.predict_logits(data_t, run)
    del data_t
    if run.fell_back_to_host_memory:
        warnings.append("The GPU memory was too small to hold the whole prediction; nnU-Net kept it in host "
                        "memory (slower).")
    timings["predict"] = timings.get("predict", 0.0) + time.perf_counter() - t0
    prov.update({"tiles": n_tiles, "folds_used": list(loaded.folds), "trainer": loaded.trainer_name,
                 "tile_step_size": run.tile_step_size,
                 "mirroring": bool(run.use_mirroring and pred.allowed_mirroring_axes is not None),
                 "patch_size": patch, "model_spacing": [float(s) for s in cm.spacing]})

    # --- resample back (torch, on the device) --------------------------------------------------------
    t0 = time.perf_counter()
    check(cancel)
    target = tuple(int(s) for s in props["shape_after_cropping_and_before_resampling"])
    unc = np.zeros(target, np.uint8) if opts.uncertainty else None
    try:
        seg = resample_logits_to_labels(logits, target, cancel, progress, uncertainty_out=unc)
    except Cancelled:
        raise
    except BaseException as exc:  # noqa: BLE001
        if not is_out_of_memory(exc) or logits.device.type == "cpu":
            raise
        logits = logits.to("cpu")
        empty_device_cache(device)
        warnings.append("The GPU ran out of memory while resampling; that step ran on the CPU.")
        seg = resample_logits_to_labels(logits, target, cancel, progress, uncertainty_out=unc)
    del logits
    empty_device_cache(device)
    # undo nnU-Net's crop to non-zero and its axis transposition
    before = tuple(int(s) for s in props["shape_before_cropping"])
    full = np.zeros(before, dtype=np.uint8)
    bb = props["bbox_used_for_cropping"]
    full[tuple(slice(int(a), int(b)) for a, b in bb)] = seg
    full = full.transpose(pm.transpose_backward)
    if unc is not None:
        # the uncertainty goes back the same way (outside nnU-Net's crop: background, not computed: 0)
        full_u = np.zeros(before, dtype=np.uint8)
        full_u[tuple(slice(int(a), int(b)) for a, b in bb)] = unc
        record.maps["uncertainty"] = np.ascontiguousarray(full_u.transpose(pm.transpose_backward))
    timings["resample"] = timings.get("resample", 0.0) + time.perf_counter() - t0
    return np.ascontiguousarray(full)


#: Working memory allowed for the largest activation of one CPU network call (bytes).
CPU_BATCH_BYTES = 512 * 1024 ** 2


def _cpu_batch(cm, bf16: bool) -> int:
    """Tiles (fast mode) or mirrored copies (accurate mode) per CPU network call: up to all 8 mirrored
    copies, as many as keep the largest activation (the first stage's features, doubled by the decoder's
    concatenation, at the patch size) within :data:`CPU_BATCH_BYTES`. Larger batches use the CPU better:
    float32, demo network, 8 copies of a 64^3 tile: batch 1 6.2 s, 2 2.1 s, 4 1.7 s, 8 1.4 s (2 threads,
    loaded machine, best of 3)."""
    try:
        f0 = int(cm.network_arch_init_kwargs.get("features_per_stage", [32])[0])
    except (AttributeError, TypeError, ValueError, IndexError):
        f0 = 32
    per_sample = 2 * f0 * int(np.prod(cm.patch_size)) * (2 if bf16 else 4)
    # bfloat16: 4 (the earlier measured setting; 8 was no faster there)
    return int(max(1, min(4 if bf16 else 8, CPU_BATCH_BYTES // max(1, per_sample))))


def _torch_preprocessing_unsupported(pm, cm) -> Optional[str]:
    from .preprocess import torch_preprocessing_supported

    return torch_preprocessing_supported(pm, cm)


def _body_mask_model_grid(sub: np.ndarray, pre_shape, props: dict, pm) -> np.ndarray:
    """The body (> -500 HU, dilated by one voxel) on the preprocessed (model) grid, boolean (*pre_shape[1:]).

    The mask is carried through nnU-Net's own geometry steps (axis transposition, crop to non-zero,
    resampling by nearest neighbour) so that it lines up with the preprocessed data and its tiles."""
    mask = (sub > BODY_THRESHOLD_HU).transpose(pm.transpose_forward)
    bb = props["bbox_used_for_cropping"]
    mask = mask[tuple(slice(int(a), int(b)) for a, b in bb)]
    idx = [np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)
           for n_in, n_out in zip(mask.shape, [int(n) for n in pre_shape[1:]])]
    mask = mask[np.ix_(*idx)]
    # one voxel more: the trilinear resampling back reads the neighbours of every body voxel too
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, structure=np.ones((3, 3, 3), bool))


def _tile_filter(body: Optional[np.ndarray], patch):
    """``tile_filter`` for the predictor: True for sliding-window tiles that hold any body voxel (``body``
    on the model grid of the data being swept; padded to the patch as nnU-Net pads the data); None (all
    tiles) without a mask."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    if body is None:
        return None
    padded = pad_nd_image(body[None], patch, "constant", {"constant_values": 0}, False, None)
    if not padded.any():
        return None   # nothing above -500 HU at the model's resolution: predict everything

    def keep(sl) -> bool:
        return bool(padded[sl].any())

    return keep


def base_run(pred, cancel: Optional[CancelToken] = None, **changes):
    """The PredictRun of the predictor's load-time settings (folds, mirroring and tile step of its mode)."""
    from .predictor import PredictRun

    values = {"parameters": list(pred.list_of_parameters), "use_mirroring": bool(pred.use_mirroring),
              "tile_step_size": float(pred.tile_step_size), "cancel": cancel}
    values.update(changes)
    return PredictRun(**values)


def _two_stage_logits(pred, data, body: Optional[np.ndarray], patch, cm, two_stage: dict,
                      progress: ProgressCallback, prov: dict, run=None):
    """Accurate-mode logits (c, *spatial) of the preprocessed ``data`` (1, *spatial) in two stages.

    1. A fast pass (one fold, no mirroring, the fast tile step) over the whole CT finds the liver and the
       other structures on the model grid.
    2. When it found a liver, the accurate sweep (all folds, mirroring, nnU-Net's whole-CT tile grid) runs
       only the tiles that reach into the box of everything stage 1 labelled (the liver and the other
       structures, so a stray blob or a vessel away from the liver is inside too) + ``two_stage["margin_mm"]``;
       its logits replace the first pass's inside that box. Every tile covering a box voxel runs, with the
       same arithmetic in the same order, so inside the box the logits are those of the whole-CT sweep;
       outside it the fast pass stands. (A box around the liver's largest component alone was measured on a
       large-field phantom: half the tiles, but with the demo model's stray output elsewhere the vessels'
       Dice against the whole-CT sweep fell to 0.91.)

    No liver found, or a box reaching every tile: the plain whole-CT sweep (the fast pass is then the only
    extra cost: its tiles without mirroring, ~7 % of the accurate passes on the IRCADb CT).
    run: the accurate sweep's PredictRun (default: the predictor's load-time settings); the first pass is a copy
    with one fold, no mirroring and the fast step.
    Returns (logits, tiles of the accurate sweep, the PredictRun that made the accurate logits)."""
    import torch

    from .crop import mask_bbox

    run = run if run is not None else base_run(pred)
    params = list(run.parameters)
    folds = len(params)
    full = run.but(tile_filter=_tile_filter(body, patch))
    n_full = pred.count_tiles(data.shape, full)
    fast = full.but(use_mirroring=False, tile_step_size=two_stage["fast_step"],
                    parameters=[params[two_stage["fast_fold_index"]]])
    n1 = pred.count_tiles(data.shape, fast)
    total = n1 + n_full * folds
    progress("predict", 0, total)
    fast.tile_callback = lambda done, _t: progress("predict", done, total)
    first = pred.predict_logits(data, fast)
    labels1 = first.argmax(0)
    liver_found = bool(torch.isin(labels1, torch.as_tensor(two_stage["liver_values"], device=labels1.device)).any())
    roi = torch.isin(labels1, torch.as_tensor(two_stage["roi_values"], device=labels1.device)).cpu().numpy()
    del labels1
    record = {"first_pass": f"fold {two_stage['fast_fold']}, no mirroring, tile step {two_stage['fast_step']}, "
                            "whole CT",
              "first_pass_tiles": n1, "margin_mm": float(two_stage["margin_mm"]), "accurate_tiles_whole_ct": n_full}
    spatial = tuple(int(n) for n in data.shape[1:])
    box = None
    if liver_found:
        margin = [int(np.ceil(float(two_stage["margin_mm"]) / float(s))) for s in cm.spacing]
        box = mask_bbox(roi, margin)
    del roi
    n2 = n_full
    accurate_run = full
    if box is not None:
        region = np.zeros(spatial, dtype=bool)
        region[box] = True
        if body is not None:
            region &= body
        accurate_run = full.but(tile_filter=_tile_filter(region, patch))
        n2 = pred.count_tiles(data.shape, accurate_run)
        del region
        if n2 >= n_full:
            box = None        # the box reaches every tile: the whole-CT sweep it is
            n2 = n_full
            accurate_run = full
    total = n1 + n2 * folds
    progress("predict", n1, total)
    accurate_run.tile_callback = lambda done, _t: progress("predict", n1 + done, total)
    if box is None:
        del first
        logits = pred.predict_logits(data, accurate_run)
        prov["liver_crop"] = ("no liver in the first pass: accurate mode ran on the whole CT" if not liver_found else
                              "the region of the liver and the other structures reaches every tile: accurate mode "
                              "ran on the whole CT")
    else:
        accurate = pred.predict_logits(data, accurate_run)
        with torch.inference_mode():    # the logits are inference tensors: update them in that mode
            first[(slice(None), *box)] = accurate[(slice(None), *box)].to(first.device, first.dtype)
        del accurate
        logits = first
        record["region_model_grid"] = [[s.start, s.stop] for s in box]
        record["outside_region"] = "first-pass (fast) prediction"
        prov["liver_crop"] = (f"liver found in a fast first pass: accurate mode ran the {n2} of {n_full} tiles "
                              f"reaching the region of the liver and the other structures + "
                              f"{float(two_stage['margin_mm']):g} mm; the first pass's prediction is kept outside it")
    record["accurate_tiles"] = n2
    prov["two_stage"] = record
    accurate_run.fell_back_to_host_memory |= fast.fell_back_to_host_memory
    return logits, n2, accurate_run


def combine_label_maps(maps: Sequence[np.ndarray]) -> np.ndarray:
    """One label map from several (engine.labels values) by :data:`PRECEDENCE_RULE`."""
    if not maps:
        raise ValueError("no label maps to combine")
    out = np.zeros(maps[0].shape, dtype=np.uint8)
    for rank in sorted(set(_RANK.values())):
        labs = [lab for lab, r in _RANK.items() if r == rank]
        for m in maps:
            sel = np.isin(m, labs)
            out[sel] = m[sel]
    return out


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentOptions:
    """How :func:`segment` runs (one object instead of a long parameter list; the CLI and the window build it).

    mode: "fast" (one fold, no mirroring, tile step 0.75) or "accurate" (all folds, the model's mirroring,
        tile step 0.5).
    device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N", "mps" or "gpu".
    threads: CPU threads for torch (None: all cores).
    skip_empty_tiles (default): predict only the sliding-window tiles that hold body voxels (> -500 HU); the
        tiles kept are exactly where nnU-Net puts them, so every body voxel gets nnU-Net's own prediction
        (measured: Dice 0.9997 against nnUNetv2_predict on a real CT).
    crop_to_body (off by default): crop the CT to the body's bounding box (> -500 HU, largest component)
        before nnU-Net's preprocessing: less to preprocess and resample, but the tiles then sit elsewhere than
        in nnU-Net's sweep (Dice 0.89 against nnUNetv2_predict on the IRCADb CT with the interim demo model).
    liver_crop: two-stage accurate mode. None (default): on in accurate mode, off in fast mode; True / False:
        on / off (it only applies to accurate mode). A fast pass over the whole CT finds the liver; the
        accurate sweep then runs only nnU-Net's tiles that reach into the box of the liver and the other
        structures it found (+ ``liver_crop_margin_mm``); outside it the fast pass's prediction is kept.
    preprocessing: "torch" (default): nnU-Net's CT normalisation, crop and cubic-spline resampling written as
        torch matrices (nnU-Net's numbers to float32 rounding, faster, interruptible); "nnunet": nnU-Net's own
        ``run_case_npy``. Models whose preprocessing is not nnU-Net's default CT scheme always use "nnunet".
    cpu_bf16: on the CPU, bfloat16 autocast (True) or float32, nnU-Net's precision (None/False, default;
        bfloat16 is ~1.2x faster but moved fine structures: hepatic veins Dice 0.983 against nnUNetv2_predict).
    postprocess / postprocess_options: LiverPlan's clean-up of the raw output (engine.postprocess).
    split_vessels: where a model gives intrahepatic vessels without the portal/hepatic split, assign them
        (engine.vessel_split); off: they stay "vessel, unassigned".
    set_crop: in a multi-model run (a model set), run the parts that only need the liver (known releases such
        as liver_vessels, liver_lesions, liver_segments) on the box of the liver found so far + the release's
        margin.
    uncertainty: keep the model's per-voxel doubt (1 - max softmax probability, uint8, 1 byte per voxel:
        engine.review.uncertainty) as ``result.extra_maps["uncertainty"]``; only for a run of one model. Off
        by default (the CLI's --uncertainty, the window's runs through case_session.run_model turn it on).
    """

    mode: str = "fast"
    device: str = "auto"
    threads: Optional[int] = None
    crop_to_body: bool = False
    skip_empty_tiles: bool = True
    liver_crop: Optional[bool] = None
    liver_crop_margin_mm: float = 20.0
    preprocessing: str = "torch"
    cpu_bf16: Optional[bool] = None
    postprocess: bool = True
    postprocess_options: Optional[PostprocessOptions] = None
    split_vessels: bool = True
    set_crop: bool = True
    uncertainty: bool = False

    def validate(self) -> None:
        """ModelError in words for a value that cannot run."""
        if self.mode not in MODES:
            raise ModelError(f"Unknown mode '{self.mode}': choose 'fast' or 'accurate'.")
        if self.preprocessing not in PREPROCESSING:
            raise ModelError(f"Unknown preprocessing '{self.preprocessing}': choose 'torch' or 'nnunet'.")
        if not (self.liver_crop_margin_mm >= 0):
            raise ModelError("The liver-crop margin must be zero or more millimetres.")
        if self.threads is not None and self.threads < 1:
            raise ModelError(f"The number of threads must be 1 or more (got {self.threads}).")

    @property
    def uses_liver_crop(self) -> bool:
        return (self.mode == "accurate") if self.liver_crop is None else bool(self.liver_crop) and self.mode == "accurate"


@dataclass
class RunRecord:
    """What one :func:`segment` run noted on its way: warnings (each once), seconds per stage, one provenance
    dict per model run. Filled by the pipeline (pass one in to read it even when the run fails)."""

    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: per-voxel side outputs of the model being run (the uncertainty map on its way back), not provenance
    maps: dict = field(default_factory=dict)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


@dataclass
class ModelSetChoice:
    """A model set chosen as one model (engine.models.find_model_set): its name, parts in run order, notes."""

    name: str
    parts: list
    notes: list[str] = field(default_factory=list)


def _liver_box_canonical(labels: np.ndarray, spacing, margin_mm: float):
    """Box (slices, canonical grid) of the parenchyma + lesions + intrahepatic vessels so far, + margin."""
    from .crop import mask_bbox

    liver = np.isin(labels, (Label.PARENCHYMA, Label.CRLM))
    if not liver.any():
        return None
    margin = [int(np.ceil(margin_mm / float(s))) for s in spacing]
    return mask_bbox(liver, margin)


def _as_parts(model) -> tuple[list[ModelInfo], Optional[str], list[str]]:
    if isinstance(model, ModelSetChoice):
        return list(model.parts), model.name, list(model.notes)
    if isinstance(model, ModelInfo):
        return [model], None, []
    return list(model), None, []


def segment(case: Case, model: Union[ModelInfo, Sequence[ModelInfo], ModelSetChoice],
            options: Optional[SegmentOptions] = None, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None, record: Optional[RunRecord] = None) -> SegmentationResult:
    """Segment ``case`` with one model, several (combined by :data:`PRECEDENCE_RULE`), or a model set.

    options: :class:`SegmentOptions` (defaults: fast mode, automatic device). record: a :class:`RunRecord` the
    run fills (warnings, timings, per-model provenance); the result carries the same.
    Each model sees the CT as its image reader would give it (engine.inference.orientation). Parts of a set
    (and extra models) that only need the liver run on the liver's box found by the parts before them.
    Intrahepatic vessels given without the portal/hepatic split are split once, after all models ran
    (:func:`_split_unassigned_vessels`). Couinaud segments (models with liver_segment_N labels) go to
    ``result.extra_maps["couinaud"]``.
    Raises Cancelled (not a RuntimeError) when ``cancel`` is set; ModelError for unusable models or options.
    The case is never modified.
    """
    from .device import resolve_device, torch_threads

    opts = options or SegmentOptions()
    if not isinstance(opts, SegmentOptions):
        raise ModelError(f"segment() takes its options as a SegmentOptions, not {type(opts).__name__}.")
    progress = progress or no_progress
    rec = record if record is not None else RunRecord()
    if not isinstance(case, Case):
        raise InputError(f"segment() takes a Case, not {type(case).__name__}: open the CT first with "
                         "engine.io.load_case(path).")
    models, set_name, set_notes = _as_parts(model)
    if not models:
        raise ModelError("No model was given.")
    opts.validate()
    use_liver_crop = opts.uses_liver_crop
    t_start = time.perf_counter()
    check(cancel)
    dev = resolve_device(opts.device)
    warnings, timings = rec.warnings, rec.timings
    for m in models:
        for w in m.warnings:
            rec.warn(w)
    for n in set_notes:
        rec.warn(n)
    maps: list[np.ndarray] = []
    couinaud: Optional[np.ndarray] = None
    uncertainty: Optional[np.ndarray] = None
    device_used = str(dev)
    with torch_threads(opts.threads) as n_threads:
        views: dict = {}
        for i, m in enumerate(models):
            prov: dict = {}
            # the CT as this model's image reader gives it (TotalSegmentator's: reoriented to RAS)
            reader, reader_warning = model_reader(m.dataset_json, m.plans)
            if reader_warning:
                rec.warn(reader_warning)
            view = views.get(reader)
            if view is None:
                view = views[reader] = model_view(case, reader)
            prov["image_reader"] = reader
            prov["model_input_orientation"] = view.orientation
            prov["plans_format"] = ("old (network rebuilt by nnU-Net from the plans' UNet entries)"
                                    if is_old_plans_format(m) else "current")
            image_src, box_view = view.array, None
            release = _release_of(m)
            if opts.set_crop and i > 0 and release is not None and release.crop_to_liver:
                box = _liver_box_canonical(combine_label_maps(maps), case.geometry.spacing, release.crop_margin_mm)
                if box is None:
                    prov["set_crop"] = "no liver found by the parts before: ran on the whole CT"
                else:
                    box_view = view.box_from_canonical(box)
                    image_src = np.ascontiguousarray(view.array[box_view])
                    prov["set_crop"] = (f"run on the liver's box found by the parts before + "
                                        f"{release.crop_margin_mm:g} mm ({'x'.join(str(s.stop - s.start) for s in box_view)} "
                                        "voxels of the model's view)")
            two_stage = None
            if use_liver_crop and Label.PARENCHYMA in m.label_to_structure.values():
                fast = _mode_settings(m, "fast")
                two_stage = {"liver_values": sorted(v for v, lab in m.label_to_structure.items()
                                                    if lab == Label.PARENCHYMA),
                             "roi_values": sorted(m.label_to_structure),
                             "margin_mm": float(opts.liver_crop_margin_mm), "fast_fold": fast["folds"][0],
                             "fast_fold_index": list(m.folds).index(fast["folds"][0]),
                             "fast_step": fast["tile_step_size"]}
            elif use_liver_crop:
                prov["liver_crop"] = "the model has no liver label: accurate mode ran on the whole CT"
            rec.maps.pop("uncertainty", None)
            values = _predict_one(image_src, view.spacing, m, dev, opts, progress, cancel, rec, prov, two_stage)
            unc_view = rec.maps.pop("uncertainty", None)
            if values is None:
                rec.warn("No body found in this image (nothing denser than -500 HU); nothing was "
                         "segmented. Check that this is a CT in Hounsfield units.")
                values = np.zeros(image_src.shape, dtype=np.uint8)
            if box_view is not None:
                full = np.zeros(view.array.shape, dtype=np.uint8)
                full[box_view] = values
                values = full
                if unc_view is not None:
                    full_u = np.zeros(view.array.shape, dtype=np.uint8)
                    full_u[box_view] = unc_view
                    unc_view = full_u
            if unc_view is not None and len(models) == 1 and unc_view.shape == values.shape:
                uncertainty = view.to_canonical(unc_view)
            device_used = prov.get("device", device_used)
            maps.append(view.to_canonical(_map_values(values, m.label_to_structure)))
            if m.segment_values:
                seg = view.to_canonical(_map_values(values, m.segment_values))
                couinaud = seg if couinaud is None else np.where(seg > 0, seg, couinaud)
            prov["model"] = m.to_provenance()
            rec.runs.append(prov)
        check(cancel)
        labels = combine_label_maps(maps) if len(maps) > 1 else maps[0]
        split_record = None
        if opts.split_vessels:
            labels, split_record = _split_unassigned_vessels(labels, case, progress, cancel, rec)
        t0 = time.perf_counter()
        pp_record = None
        if opts.postprocess:
            progress("postprocess", 0, 1)
            labels, pp_record = postprocess(labels, case.geometry.spacing, opts.postprocess_options)
            progress("postprocess", 1, 1)
        timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    if any(m.card.demo for m in models):
        rec.warn("Made by a demonstration model (synthetic training data): not for clinical use.")
    provenance = _provenance(models, rec.runs, opts, device_used, n_threads, pp_record, warnings, timings,
                             use_liver_crop)
    if set_name:
        provenance["model_set"] = {"name": set_name, "parts": [p["model"]["card"]["name"] for p in rec.runs],
                                   "notes": list(set_notes)}
    if split_record is not None:
        provenance["vessel_split"] = split_record
    extra_maps = {}
    if couinaud is not None:
        # segment numbers only where the final map has liver (parenchyma, vessels or lesions inside it)
        inside = np.isin(labels, (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.CRLM,
                                  Label.VESSEL_UNASSIGNED))
        extra_maps["couinaud"] = np.where(inside, couinaud, 0).astype(np.uint8)
        provenance["extra_maps"] = {"couinaud": "Couinaud segment 1-8 per voxel (0: none), uint8, same grid"}
    if uncertainty is not None and uncertainty.shape == labels.shape:
        from ..review.uncertainty import UNCERTAINTY_KEY
        extra_maps[UNCERTAINTY_KEY] = np.ascontiguousarray(uncertainty, dtype=np.uint8)
        provenance.setdefault("extra_maps", {})[UNCERTAINTY_KEY] = (
            "round(255 * (1 - max softmax probability)) per voxel, uint8, same grid (0: sure; slices no "
            "structure reached were not computed and hold 0)")
    elif opts.uncertainty:
        provenance["uncertainty"] = ("no uncertainty for this run: " + (
            "its labels combine several models' outputs" if len(models) > 1 else "the model gave none"))
    return SegmentationResult(labels=np.ascontiguousarray(labels, dtype=np.uint8), device_used=device_used,
                              mode=opts.mode, warnings=warnings, timings={k: round(v, 3) for k, v in timings.items()},
                              provenance=provenance, extra_maps=extra_maps)


def _release_of(m: ModelInfo):
    from ..releases import BY_RELEASE_KEY

    return BY_RELEASE_KEY.get(m.release) if m.release else None


def _map_values(model_values: np.ndarray, table: dict[int, int]) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for v, out in table.items():
        if 0 <= v < 256:
            lut[v] = out
    return lut[model_values]


def _split_unassigned_vessels(labels: np.ndarray, case: Case, progress: ProgressCallback,
                              cancel: Optional[CancelToken], rec: RunRecord) -> tuple[np.ndarray, Optional[dict]]:
    """The one place where vessels a model gave without the portal/hepatic split ("vessel, unassigned", 6)
    are assigned, by engine.vessel_split, after every model ran (so the cardiac model's portal trunk and IVC
    are there to start from). What stays unassigned is said in a warning, never guessed."""
    if not (labels == Label.VESSEL_UNASSIGNED).any():
        return labels, None
    from ..vessel_split import assign_vessel_tree

    t0 = time.perf_counter()
    res = assign_vessel_tree(labels, labels == Label.VESSEL_UNASSIGNED, case.geometry.spacing,
                             progress=lambda _s, d, t: progress("split vessels", d, t), cancel=cancel)
    rec.timings["split vessels"] = time.perf_counter() - t0
    rec.notes.extend(res.notes)
    if res.stats.get("unassigned_voxels", 0) > 0:
        rec.warn(f"{res.stats['unassigned_ml']:.1f} mL of the model's intrahepatic vessels could not be assigned to "
                 "the portal or the hepatic-venous system; they are shown as 'Vessel, unassigned': check them and "
                 "relabel by hand.")
    return res.labels, {"method": "engine.vessel_split.assign_vessel_tree", "notes": list(res.notes),
                        "stats": dict(res.stats)}


def _provenance(models, per_model, opts: SegmentOptions, device_used, n_threads, pp_record, warnings, timings,
                use_liver_crop: bool) -> dict:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    return {
        "engine": "LiverPlan in-process nnU-Net inference",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "mode": opts.mode, "device": device_used, "torch_threads": n_threads,
        "crop_to_body": opts.crop_to_body, "skip_empty_tiles": opts.skip_empty_tiles, "liver_crop": use_liver_crop,
        "liver_crop_requested": ("default (on in accurate mode)" if opts.liver_crop is None
                                 else bool(opts.liver_crop)),
        "liver_crop_margin_mm": float(opts.liver_crop_margin_mm),
        "options": {k: (v if not isinstance(v, PostprocessOptions) else repr(v))
                    for k, v in dataclasses.asdict(opts).items()},
        "models": [p["model"] for p in per_model],
        "runs": [{k: v for k, v in p.items() if k != "model"} for p in per_model],
        "combination_rule": PRECEDENCE_RULE if len(models) > 1 else None,
        "postprocessing": pp_record,
        "resampling": "logits resampled trilinearly with torch on the compute device, then argmax (uint8)",
        "versions": {"nnunetv2": version("nnunetv2"), "torch": version("torch")},
        "warnings": list(warnings), "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def keep_unsegmented_structures(new_labels: np.ndarray, current_labels: np.ndarray,
                                models: Union[ModelInfo, Sequence[ModelInfo]]) -> tuple[np.ndarray, list[int]]:
    """``new_labels`` (a model's result) with the current labels of the structures that none of ``models``
    segments kept, combined by :data:`PRECEDENCE_RULE` (a lesion the model found still wins over a kept
    vessel; background never overwrites): a liver-and-tumour model run on a case whose vessels were
    segmented or drawn before leaves those vessels in place. Returns (labels, the kept structures' labels
    that had voxels); the inputs are not modified."""
    models = [models] if isinstance(models, ModelInfo) else list(models)
    produced = {int(lab) for m in models for lab in m.label_to_structure.values()}
    missing = [int(lab) for lab in Label if lab != Label.BACKGROUND and int(lab) not in produced]
    if not missing:
        return new_labels, []
    lut = np.zeros(256, dtype=np.uint8)
    lut[missing] = missing
    old = lut[np.asarray(current_labels, dtype=np.uint8)]
    counts = np.bincount(old.reshape(-1), minlength=256)
    kept = [lab for lab in missing if counts[lab]]
    if not kept:
        return new_labels, []
    return combine_label_maps([np.asarray(new_labels, dtype=np.uint8), old]), kept


def apply_result(case: Case, result: SegmentationResult) -> Case:
    """A copy of ``case`` holding the result's labels, with the model card(s) in its provenance."""
    out = case.copy()
    out.set_labels(result.labels, label_source=result.label_source)
    models = result.provenance.get("models", [])
    out.provenance.model_card = models[0]["card"] if len(models) == 1 else {"combined": [m["card"] for m in models]}
    out.provenance.warnings.extend(w for w in result.warnings if w not in out.provenance.warnings)
    out.provenance.extra["segmentation"] = result.provenance
    return out


def preload(model: ModelInfo, device, mode: str = "fast") -> None:
    """Load ``model`` for ``device`` (a torch.device) and ``mode`` into this process's model cache, as the
    first :func:`segment` call would: a cluster worker loads its model once, before its first case."""
    _load(model, device, mode, no_progress)
