"""nnU-Net's preprocessing for CT models, done with torch in slabs (fast, interruptible).

nnU-Net's ``DefaultPreprocessor.run_case_npy`` (transpose -> crop to non-zero -> CTNormalization ->
cubic-spline resampling with scipy/skimage to the model spacing) cannot be interrupted and takes seconds
for a 512 x 512 CT on a CPU. :func:`preprocess_ct` does the same steps with the same geometry (same
transposition, same non-zero bounding box, same target shape from nnU-Net's ``compute_new_shape``, same
intensity formula) and the same resampling: skimage's spline ``resize`` (and nnU-Net's separate
out-of-plane step for anisotropic data) is linear and separable, so it is one small matrix per axis
(built from impulse responses), applied with torch matrix products on the compute device, a chunk of
slices at a time, with a cancel check and a progress step between chunks; skimage's clip to the
input's range is applied too. Result: nnU-Net's array to float32 rounding (tested).

Used only when the model's preprocessing is exactly nnU-Net's default for one CT channel
(:func:`torch_preprocessing_supported`); anything else goes through nnU-Net's own preprocessor.
Arrays: numpy (z, y, x) in the source file's orientation, as nnU-Net reads them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..progress import CancelToken, ProgressCallback, check

#: Bytes of float32 source per chunk (one cancel/progress step; 16 slices of a 512 x 512 CT, well under
#: 0.3 s on a loaded CPU).
PRE_SLAB_BYTES = 16 * 1024 ** 2


def torch_preprocessing_supported(plans_manager, configuration_manager) -> Optional[str]:
    """None when :func:`preprocess_ct` reproduces this model's preprocessing (one channel, CTNormalization,
    nnU-Net's DefaultPreprocessor and default data resampling); else the reason it does not."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    cm = configuration_manager
    if cm.preprocessor_class is not DefaultPreprocessor:
        return f"preprocessor {cm.preprocessor_class.__name__} is not nnU-Net's default"
    if list(cm.normalization_schemes) != ["CTNormalization"]:
        return f"normalisation {cm.normalization_schemes} is not a single CTNormalization"
    if cm.configuration.get("resampling_fn_data") != "resample_data_or_seg_to_shape":
        return f"data resampling {cm.configuration.get('resampling_fn_data')} is not nnU-Net's default"
    if len(cm.spacing) != 3:
        return "not a 3D configuration"
    props = plans_manager.foreground_intensity_properties_per_channel.get("0")
    if not props or any(k not in props for k in ("mean", "std", "percentile_00_5", "percentile_99_5")):
        return "the plans hold no CT intensity properties"
    return None


def nonzero_bbox(data: np.ndarray) -> list[list[int]]:
    """nnU-Net's ``crop_to_nonzero`` box ([lo, hi) per axis) of a (z, y, x) array: the box of its
    hole-filled non-zero mask, which is the box of the non-zero voxels themselves (filling holes adds
    only voxels enclosed by non-zero ones)."""
    nz = data != 0
    if not nz.any():
        return [[0, int(n)] for n in data.shape]   # nnU-Net would fail here; keep the whole array
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(nz.any(axis=other))
        box.append([int(idx[0]), int(idx[-1]) + 1])
    return box


def _zoom_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of skimage ``resize(..., order, mode="edge", anti_aliasing=False)`` along
    one axis (= ``ndi.zoom(grid_mode=True, mode="nearest")``: spline prefilter + evaluation, both linear and
    separable), built from the response to each unit impulse."""
    from scipy import ndimage as ndi

    if n_in == n_out:
        return np.eye(n_in)
    m = np.zeros((n_out, n_in))
    e = np.zeros(n_in)
    for j in range(n_in):
        e[:] = 0.0
        e[j] = 1.0
        col = ndi.zoom(e, n_out / n_in, order=order, mode="nearest", grid_mode=True)
        if col.shape[0] != n_out:
            raise ValueError("zoom gave another length")
        m[:, j] = col
    return m


def _coordinate_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """(n_out, n_in) matrix of nnU-Net's out-of-plane step for anisotropic data (``map_coordinates`` at
    ``scale * (i + 0.5) - 0.5``, mode "nearest", order ``order_z``)."""
    from scipy import ndimage as ndi

    if n_in == n_out:
        return np.eye(n_in)
    coords = (float(n_in) / n_out * (np.arange(n_out) + 0.5) - 0.5)[None]
    m = np.zeros((n_out, n_in))
    e = np.zeros(n_in)
    for j in range(n_in):
        e[:] = 0.0
        e[j] = 1.0
        m[:, j] = ndi.map_coordinates(e, coords, order=order, mode="nearest")
    return m


def resampling_plan(old_shape, new_shape, original_spacing, target_spacing, kwargs: dict):
    """Per-axis resampling matrices reproducing nnU-Net's ``resample_data_or_seg_to_shape`` for image data,
    plus where its output clipping applies ("volume": skimage's clip to the input's range over the whole
    volume; "slice": per slice of axis 0 for the separate-z path). None when the layout is not covered
    (anisotropic axis other than the first)."""
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    order = int(kwargs.get("order", 3))
    order_z = int(kwargs.get("order_z", 0))
    sep, axis = determine_do_sep_z_and_axis(kwargs.get("force_separate_z", False), original_spacing,
                                            target_spacing)
    if sep:
        axis = int(axis[0]) if hasattr(axis, "__len__") else int(axis)
        if axis != 0:
            return None
        mats = [_coordinate_matrix(old_shape[0], new_shape[0], order_z),
                _zoom_matrix(old_shape[1], new_shape[1], order), _zoom_matrix(old_shape[2], new_shape[2], order)]
        return mats, "slice" if order > 0 else None
    mats = [_zoom_matrix(o, n, order) for o, n in zip(old_shape, new_shape)]
    return mats, "volume" if order > 0 else None


def preprocess_ct(image: np.ndarray, spacing: Sequence[float], plans_manager, configuration_manager,
                  device=None, cancel: Optional[CancelToken] = None, progress: Optional[ProgressCallback] = None,
                  stage: str = "preprocess", slab_bytes: Optional[int] = None):
    """(data, properties) as nnU-Net's ``run_case_npy(image[None], None, {"spacing": spacing}, ...)`` gives
    them (to float32 rounding): same crop, CTNormalization, and nnU-Net's spline resampling written as one
    matrix per axis (exact: the spline prefilter and evaluation are linear and separable), applied with
    torch matrix products on ``device``, slice chunks at a time.

    image: CT in HU (z, y, x), any numeric dtype, source-file orientation. spacing: mm, same axis order.
    Returns data: float32 torch tensor (1, z', y', x') on ``device`` (CPU by default), normalised and at the
    model spacing; properties: ``shape_before_cropping``, ``bbox_used_for_cropping``,
    ``shape_after_cropping_and_before_resampling`` and ``spacing`` as nnU-Net sets them.
    Checks ``cancel`` before every chunk (raises Cancelled) and reports ``progress(stage, done, total)``.
    Raises ValueError when this model's resampling layout is not covered (the caller then uses nnU-Net's).
    """
    import torch
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    device = torch.device("cpu") if device is None else torch.device(device)
    pm, cm = plans_manager, configuration_manager
    tf = list(pm.transpose_forward)
    check(cancel)
    arr = image.transpose(tf)
    original_spacing = [float(spacing[i]) for i in tf]
    props: dict = {"spacing": [float(s) for s in spacing], "shape_before_cropping": tuple(arr.shape)}
    bbox = nonzero_bbox(arr)
    props["bbox_used_for_cropping"] = bbox
    arr = arr[tuple(slice(a, b) for a, b in bbox)]
    props["shape_after_cropping_and_before_resampling"] = tuple(arr.shape)
    target_spacing = [float(s) for s in cm.spacing]
    new_shape = tuple(int(s) for s in compute_new_shape(arr.shape, original_spacing, target_spacing))
    resample = tuple(arr.shape) != new_shape
    if resample:
        plan = resampling_plan(arr.shape, new_shape, original_spacing, target_spacing,
                               dict(cm.configuration.get("resampling_fn_data_kwargs") or {}))
        if plan is None:
            raise ValueError("anisotropic axis other than the first")
        (mz, my, mx), clip = plan
        mz_t, my_t, mx_t = (torch.as_tensor(m, dtype=torch.float32, device=device) for m in (mz, my, mx))
    ip = pm.foreground_intensity_properties_per_channel["0"]
    lower, upper = float(ip["percentile_00_5"]), float(ip["percentile_99_5"])
    mean, std = float(ip["mean"]), max(float(ip["std"]), 1e-8)

    n_in = int(arr.shape[0])
    d_out, h_out, w_out = new_shape
    slab_bytes = PRE_SLAB_BYTES if slab_bytes is None else int(slab_bytes)
    k_in = max(1, min(n_in, int(slab_bytes // max(1, arr.shape[1] * arr.shape[2] * 4))))
    chunks = list(range(0, n_in, k_in))
    k_out = max(1, min(d_out, int(slab_bytes // max(1, n_in * 4 + h_out * w_out * 4))))
    out_chunks = list(range(0, d_out, k_out)) if resample else []
    total = len(chunks) + len(out_chunks)
    if progress is not None:
        progress(stage, 0, total)
    with torch.inference_mode():
        # 1) CTNormalization (clip to the 0.5-99.5 % foreground percentiles, z-score) and in-plane resampling
        inter = torch.empty((n_in, h_out, w_out), dtype=torch.float32, device=device)
        vmin, vmax = float("inf"), float("-inf")
        for s, start in enumerate(chunks):
            check(cancel)
            stop = min(n_in, start + k_in)
            t = torch.from_numpy(np.ascontiguousarray(arr[start:stop], dtype=np.float32)).to(device)
            t.clamp_(lower, upper).sub_(mean).div_(std)
            if resample:
                if clip == "volume":
                    vmin, vmax = min(vmin, float(t.min())), max(vmax, float(t.max()))
                    t = torch.matmul(torch.matmul(my_t, t), mx_t.T)
                elif clip == "slice":
                    lo_s = t.amin(dim=(1, 2), keepdim=True)
                    hi_s = t.amax(dim=(1, 2), keepdim=True)
                    t = torch.matmul(torch.matmul(my_t, t), mx_t.T)
                    t = torch.maximum(torch.minimum(t, hi_s), lo_s)   # skimage clips each 2D resize
                else:
                    t = torch.matmul(torch.matmul(my_t, t), mx_t.T)
            inter[start:stop] = t
            del t
            if progress is not None:
                progress(stage, s + 1, total)
        if not resample:
            return inter[None], props
        # 2) along the first axis
        out = torch.empty((1, *new_shape), dtype=torch.float32, device=device)
        flat = inter.reshape(n_in, -1)
        for s, start in enumerate(out_chunks):
            check(cancel)
            stop = min(d_out, start + k_out)
            t = torch.matmul(mz_t[start:stop], flat)
            if clip == "volume":
                t.clamp_(vmin, vmax)                  # skimage's resize clips to the input's range
            out[0, start:stop] = t.reshape(stop - start, h_out, w_out)
            if progress is not None:
                progress(stage, len(chunks) + s + 1, total)
    return out, props
