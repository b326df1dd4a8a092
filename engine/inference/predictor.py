"""nnU-Net's predictor with a per-tile progress callback and a cancel token.

nnU-Net 2.8.1 (pinned) offers neither. We subclass ``nnUNetPredictor`` at two private methods:

* ``_internal_predict_sliding_window_return_logits(self, data, slicers, do_on_device=True)`` — the
  sliding-window loop. Our version is nnU-Net's arithmetic (half-precision accumulators, Gaussian
  weighting, inf check) without its producer thread, so a cancel leaves no thread behind; it reports each
  tile and checks the cancel token before each.
* ``_internal_maybe_mirror_and_predict(self, x)`` — one tile's forward passes; our version checks the
  token between mirrored passes (8 passes of a big network on a CPU take well over a second).

Also: a forward pre-hook on every convolution checks the token (a cancel waits for one layer, not one
forward pass); on the CPU the network runs in channels_last_3d layout with its instance norms computed as
channels-last group norms (``install_channels_last_norms``: no layout copies, same float32 arithmetic),
all 8 mirrored copies of a tile (or up to 8 tiles without mirroring) in one call where memory allows, and
optionally under bfloat16 autocast (``cpu_bf16``, off by default: it moved fine structures, see
pipeline.segment).

``tests/engine/test_inference_internals.py`` fails if these names or signatures move in nnunetv2.
The class lives at module level here; this module imports torch and nnunetv2, so the rest of LiverPlan imports
it only inside the functions that run a model (the window and ``--help`` stay fast).
"""
from __future__ import annotations

import itertools
import logging
import weakref
from typing import Callable, Optional

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian

from ..progress import CancelToken
from .device import empty_device_cache, is_out_of_memory

log = logging.getLogger(__name__)

#: nnunetv2 methods we override or rely on, with their parameter names (checked by a test).
NNUNET_INTERNALS: dict[str, tuple[str, ...]] = {
    "_internal_predict_sliding_window_return_logits": ("self", "data", "slicers", "do_on_device"),
    "_internal_maybe_mirror_and_predict": ("self", "x"),
    "predict_sliding_window_return_logits": ("self", "input_image"),
    "_internal_get_sliding_window_slicers": ("self", "image_size"),
    "manual_initialization": ("self", "network", "plans_manager", "configuration_manager", "parameters",
                              "dataset_json", "trainer_name", "inference_allowed_mirroring_axes"),
}
PINNED_NNUNET = "2.8.1"

TileCallback = Callable[[int, int], None]


class LiverPlanPredictor(nnUNetPredictor):
    """nnUNetPredictor + ``tile_callback(done, total)`` + ``cancel_token`` (checked per tile)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tile_callback: Optional[TileCallback] = None
        self.cancel_token: Optional[CancelToken] = None
        self.fell_back_to_host_memory = False
        self._tiles_done_before = 0   # tiles of earlier folds (progress spans all folds)
        self._tiles_total = 0

    # -- hooks --------------------------------------------------------------------------------
    def _check_cancel(self) -> None:
        if self.cancel_token is not None:
            self.cancel_token.raise_if_cancelled()

    def install_cancel_hooks(self) -> int:
        """Check the cancel token before every convolution of the network, so a cancel is honoured
        within one layer instead of one whole forward pass (a forward pass of a big network on a loaded
        CPU takes seconds). Cancelled is not a RuntimeError, so nnU-Net's retry logic lets it through.
        Returns the number of hooks."""
        if getattr(self.network, "_liverplan_cancel_hooks", False):
            return 0
        # The hook holds the predictor weakly: predictor -> network -> hook -> predictor would be a
        # reference cycle, and a replaced model's weights (GPU memory) would live until the next
        # garbage collection instead of being freed when the cache drops it.
        me = weakref.ref(self)

        def hook(_m, _inp):
            p = me()
            if p is not None:
                p._check_cancel()

        n = 0
        for mod in self.network.modules():
            if isinstance(mod, (torch.nn.modules.conv._ConvNd,)):
                mod.register_forward_pre_hook(hook)
                n += 1
        self.network._liverplan_cancel_hooks = True
        return n

    def install_channels_last_norms(self) -> int:
        """Let the network's instance norms run in channels_last_3d on the CPU without layout copies.

        torch's instance_norm reshapes its input to (1, N*C, ...) and runs batch_norm: for a channels_last
        tensor that is a copy in, a contiguous (not channels_last) result out, and another copy before the
        next convolution — ~60 % of a (bfloat16) forward pass of the demo network in torch.profiler. An instance
        norm is exactly a group norm with one channel per group (per-(sample, channel) mean and biased
        variance over space, same eps, per-channel affine), and torch's CPU group_norm has a channels_last
        kernel. Same float32 arithmetic up to summation order (argmax agreement 0.99997 on a tile);
        ~1.8x per float32 forward pass here (batch 8: 1.14 s vs 2.04 s NCDHW, best of 3). Other devices,
        dtypes and layouts keep the module's own forward.
        Returns the number of norms patched."""
        import torch.nn.functional as F

        n = 0
        for mod in self.network.modules():
            if not isinstance(mod, torch.nn.modules.instancenorm._InstanceNorm) or mod.track_running_stats:
                continue
            if "forward" in mod.__dict__:
                continue
            original = type(mod).forward

            def forward(x, _original=original, _ref=weakref.ref(mod)):
                # The module is held weakly (a bound method in its own __dict__ would be a cycle).
                # A deepcopy of the patched network would still point here: nothing in LiverPlan copies one.
                # float32 only: under bfloat16 autocast torch's own instance norm measured as fast or faster
                m = _ref()
                if (x.device.type == "cpu" and x.dim() == 5 and x.shape[0] > 0 and x.dtype == torch.float32
                        and x.is_contiguous(memory_format=torch.channels_last_3d)):
                    w = m.weight if m.affine else None
                    b = m.bias if m.affine else None
                    return F.group_norm(x, x.shape[1], w, b, m.eps)
                return _original(m, x)

            mod.forward = forward
            n += 1
        return n

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One network call, in the memory format / precision chosen for this device (float32 out)."""
        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.cpu_bf16 and x.device.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.network(x).float()
        return self.network(x)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        if mirror_axes is None:
            return self._forward(x)
        assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
        mirror_axes = [m + 2 for m in mirror_axes]
        combos = [()] + [c for i in range(len(mirror_axes)) for c in itertools.combinations(mirror_axes, i + 1)]
        # On the CPU, mirrored copies go through the network several at a time (set by the pipeline: up to
        # all 8; a batch of 4 ran ~1.3-1.5x faster than 4 single passes here); on a GPU one at a time, as
        # nnU-Net does, to bound memory. x may hold several tiles (b); each network call then takes
        # b copies per mirror combination.
        b = x.shape[0]
        group = max(1, self.mirror_batch // b) if self.device.type == "cpu" else 1
        prediction = None
        for g in range(0, len(combos), group):
            self._check_cancel()
            chunk = combos[g:g + group]
            batch = torch.cat([torch.flip(x, axes) if axes else x for axes in chunk], 0)
            out = self._forward(batch)
            for j, axes in enumerate(chunk):
                o = out[j * b:(j + 1) * b]
                o = torch.flip(o, axes) if axes else o
                prediction = o.clone() if prediction is None else prediction.add_(o)
        prediction /= len(combos)
        return prediction

    def tiles_per_call(self) -> int:
        """Tiles per network call: on the CPU as many as fill the batch with their passes (up to
        ``tile_batch`` tiles without mirroring; one tile with all 8 passes); 1 on a GPU."""
        if self.device.type != "cpu":
            return 1
        passes = self.mirror_combinations()
        if passes == 1:
            return max(1, self.tile_batch)
        return max(1, self.mirror_batch // passes)

    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                       do_on_device: bool = True):
        predicted_logits = n_predictions = prediction = gaussian = workon = None
        results_device = self.device if do_on_device else torch.device("cpu")
        if self.tile_filter is not None:
            # Tiles holding no body at all are skipped; the tiles kept sit exactly where nnU-Net puts
            # them, so every body voxel gets the same prediction as with nnU-Net's full sweep.
            slicers = [sl for sl in slicers if self.tile_filter(sl)]
        n = len(slicers)
        try:
            empty_device_cache(self.device)
            data = data.to(results_device)
            predicted_logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]),
                                           dtype=torch.half, device=results_device)
            n_predictions = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            if self.use_gaussian:
                gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                            value_scaling_factor=10, device=results_device)
            else:
                gaussian = 1
            # On the CPU without mirroring, a few tiles go through the network together (batch-1 passes
            # of a 3D U-Net use a CPU poorly: ~2x per tile measured); with mirroring the flipped copies
            # already make the batch. Each tile's result is the same computation as alone.
            group = self.tiles_per_call()
            for g in range(0, n, group):
                self._check_cancel()
                chunk = slicers[g:g + group]
                workon = torch.cat([data[sl][None] for sl in chunk], 0).contiguous().to(self.device)
                if self.network_dtype is not None:
                    workon = workon.to(self.network_dtype)
                preds = self._internal_maybe_mirror_and_predict(workon)
                for j, sl in enumerate(chunk):
                    prediction = preds[j].to(results_device)
                    if self.use_gaussian:
                        prediction *= gaussian
                    predicted_logits[sl] += prediction
                    n_predictions[sl[1:]] += gaussian
                    if self.tile_callback is not None:
                        self.tile_callback(self._tiles_done_before + g + j + 1, self._tiles_total or n)
                    self._check_cancel()   # honoured per tile, as without batching
                del preds
            if self.tile_filter is not None:
                # voxels no kept tile covers (air): background
                uncovered = n_predictions == 0
                n_predictions[uncovered] = 1
                predicted_logits[:, uncovered] = 0
                predicted_logits[0][uncovered] = 10
                del uncovered
            torch.div(predicted_logits, n_predictions, out=predicted_logits)
            if torch.any(torch.isinf(predicted_logits)):
                raise RuntimeError("Encountered inf in predicted array. Aborting... If this problem persists, "
                                   "reduce value_scaling_factor in compute_gaussian or increase the dtype of "
                                   "predicted_logits to fp32")
            return predicted_logits
        except BaseException as exc:
            # nnU-Net's caller retries with results in host memory on any RuntimeError (an OOM): note it.
            if do_on_device and is_out_of_memory(exc):
                self.fell_back_to_host_memory = True
            del predicted_logits, n_predictions, prediction, gaussian, workon
            empty_device_cache(self.device)
            raise

    network_dtype = None  # torch.float16 for the reduced-memory retry on a GPU
    tile_filter = None    # callable(slicer) -> bool: predict this tile? (None: all tiles)
    mirror_batch = 4      # mirrored copies per network call on the CPU
    tile_batch = 4        # tiles per network call on the CPU without mirroring
    cpu_bf16 = False      # bfloat16 autocast on the CPU (set by the pipeline on request)
    channels_last = False  # channels_last_3d input (the network is converted alongside)
    current_parameters = None  # the fold weights the network holds now (set by the pipeline at load)

    def mirror_combinations(self) -> int:
        """How many passes a tile gets with the current mirroring (1 without)."""
        axes = self.allowed_mirroring_axes if self.use_mirroring else None
        return 1 if axes is None else 2 ** len(axes)

    # -- our own fold loop (nnU-Net's predict_logits_from_preprocessed_data resets thread counts) ----
    @torch.inference_mode()
    def predict_logits(self, data: torch.Tensor, n_tiles: int) -> torch.Tensor:
        """Logits (c, *spatial) for preprocessed ``data`` (1, *spatial), averaged over the loaded folds.

        With one fold the result stays on the results device (a GPU keeps it for resampling there)."""
        prediction = None
        folds = len(self.list_of_parameters)
        self._tiles_total = n_tiles * folds
        for k, params in enumerate(self.list_of_parameters):
            self._check_cancel()
            self._tiles_done_before = k * n_tiles
            if k > 0 or folds > 1 or self.current_parameters is not params:
                self.network.load_state_dict(params)
                self.current_parameters = params
            logits = self.predict_sliding_window_return_logits(data)
            if folds == 1:
                return logits
            logits = logits.to("cpu", torch.float32)
            prediction = logits if prediction is None else prediction.add_(logits)
        prediction /= folds
        return prediction.half()

    def count_tiles(self, preprocessed_shape) -> int:
        """Number of sliding-window tiles for a preprocessed (c, *spatial) array (after padding)."""
        import numpy as np

        patch = self.configuration_manager.patch_size
        padded = [max(int(s), int(p)) for s, p in zip(preprocessed_shape[1:], patch)]
        slicers = self._internal_get_sliding_window_slicers(tuple(np.asarray(padded)))
        if self.tile_filter is not None:
            slicers = [sl for sl in slicers if self.tile_filter(sl)]
        return len(slicers)



def predictor_class():
    """The ``LiverPlanPredictor`` class (kept for callers that imported it through this function)."""
    return LiverPlanPredictor
