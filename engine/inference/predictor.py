"""nnU-Net's predictor with a per-tile progress callback and a cancel token.

nnU-Net 2.8.1 (pinned) offers neither. We subclass ``nnUNetPredictor`` at two private methods:

* ``_internal_predict_sliding_window_return_logits(self, data, slicers, do_on_device=True)`` — the
  sliding-window loop. Our version is nnU-Net's arithmetic (half-precision accumulators, Gaussian
  weighting, inf check) without its producer thread, so a cancel leaves no thread behind; it reports each
  tile and checks the cancel token before each.
* ``_internal_maybe_mirror_and_predict(self, x)`` — one tile's forward passes; our version checks the
  token between mirrored passes (8 passes of a big network on a CPU take well over a second).

Per-run values (fold weights, mirroring, tile step, tile filter, progress callback, cancel token, CPU precision
and batch) travel in a :class:`PredictRun` passed to :meth:`LiverPlanPredictor.predict_logits`; the cached
predictor keeps only what its load decided. nnU-Net's own entry points (which call the two overridden methods)
run with the load-time settings (:meth:`LiverPlanPredictor.default_run`).

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

import contextlib
import dataclasses
import itertools
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

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


@dataclass
class PredictRun:
    """The per-run values of one prediction, passed to :meth:`LiverPlanPredictor.predict_logits` as an argument
    (the cached predictor holds only what its load decided: network, device, folds, mirroring axes).

    parameters: the fold weights to average. use_mirroring / tile_step_size: the sweep. tile_filter:
    ``slicer -> bool`` (None: every tile). tile_callback: ``(done, total)`` per tile over all folds. cancel:
    checked per tile, between mirrored passes and before every convolution. cpu_bf16 / cpu_batch: CPU precision
    and copies per network call. fell_back_to_host_memory: set by the predictor when the results moved from
    the GPU to host memory (nnU-Net's out-of-memory retry).
    """

    parameters: Sequence[Any]
    use_mirroring: bool
    tile_step_size: float
    tile_filter: Optional[Callable[[tuple], bool]] = None
    tile_callback: Optional[TileCallback] = None
    cancel: Optional[CancelToken] = None
    cpu_bf16: bool = False
    cpu_batch: int = 4
    fell_back_to_host_memory: bool = False
    tiles_done_before: int = 0      # progress offset (tiles of earlier folds)
    tiles_total: int = 0

    def but(self, **changes) -> "PredictRun":
        """A copy with some values changed (a fresh progress count)."""
        return dataclasses.replace(self, tiles_done_before=0, tiles_total=0, fell_back_to_host_memory=False,
                                   **changes)


class LiverPlanPredictor(nnUNetPredictor):
    """nnUNetPredictor whose sweeps take a :class:`PredictRun` (per-tile progress, cancel, tile filter,
    CPU batching). nnU-Net's own entry points still work: they run with the predictor's load-time settings."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: the token the convolution hooks check: the running PredictRun's (None between runs); a test may set it
        self.cancel_token: Optional[CancelToken] = None
        self._active: Optional[PredictRun] = None

    def default_run(self) -> PredictRun:
        """The run nnU-Net's own entry points (predict_single_npy_array, ...) get: the load-time settings."""
        return PredictRun(parameters=self.list_of_parameters, use_mirroring=bool(self.use_mirroring),
                          tile_step_size=float(self.tile_step_size), cancel=self.cancel_token)

    @contextlib.contextmanager
    def _running(self, run: PredictRun):
        """The run in force for nnU-Net's callbacks into this object, for one call only (never left behind)."""
        outer = (self._active, self.cancel_token)
        self._active, self.cancel_token = run, run.cancel
        try:
            yield run
        finally:
            self._active, self.cancel_token = outer

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

    def _forward(self, x: torch.Tensor, run: PredictRun) -> torch.Tensor:
        """One network call, in the memory format / precision chosen for this device (float32 out)."""
        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if run.cpu_bf16 and x.device.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.network(x).float()
        return self.network(x)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_tile(x, self._active or self.default_run())

    @torch.inference_mode()
    def predict_tile(self, x: torch.Tensor, run: PredictRun) -> torch.Tensor:
        """Logits of one batch of tiles ``x`` (b, c, *patch), averaged over the mirrored passes of the run."""
        mirror_axes = self.allowed_mirroring_axes if run.use_mirroring else None
        if mirror_axes is None:
            return self._forward(x, run)
        assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
        mirror_axes = [m + 2 for m in mirror_axes]
        combos = [()] + [c for i in range(len(mirror_axes)) for c in itertools.combinations(mirror_axes, i + 1)]
        # On the CPU, mirrored copies go through the network several at a time (set by the pipeline: up to
        # all 8; a batch of 4 ran ~1.3-1.5x faster than 4 single passes here); on a GPU one at a time, as
        # nnU-Net does, to bound memory. x may hold several tiles (b); each network call then takes
        # b copies per mirror combination.
        b = x.shape[0]
        group = max(1, run.cpu_batch // b) if self.device.type == "cpu" else 1
        prediction = None
        for g in range(0, len(combos), group):
            self._check_cancel()
            chunk = combos[g:g + group]
            batch = torch.cat([torch.flip(x, axes) if axes else x for axes in chunk], 0)
            out = self._forward(batch, run)
            for j, axes in enumerate(chunk):
                o = out[j * b:(j + 1) * b]
                o = torch.flip(o, axes) if axes else o
                prediction = o.clone() if prediction is None else prediction.add_(o)
        prediction /= len(combos)
        return prediction

    def tiles_per_call(self, run: PredictRun) -> int:
        """Tiles per network call: on the CPU as many as fill the batch with their passes (up to
        ``cpu_batch`` tiles without mirroring; one tile with all 8 passes); 1 on a GPU."""
        if self.device.type != "cpu":
            return 1
        passes = self.mirror_combinations(run)
        if passes == 1:
            return max(1, run.cpu_batch)
        return max(1, run.cpu_batch // passes)

    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                       do_on_device: bool = True):
        return self._sweep(data, slicers, self._active or self.default_run(), do_on_device)

    @torch.inference_mode()
    def _sweep(self, data: torch.Tensor, slicers, run: PredictRun, do_on_device: bool = True):
        """nnU-Net's sliding-window loop (Gaussian-weighted average of the tiles) for one run."""
        predicted_logits = n_predictions = prediction = gaussian = workon = None
        results_device = self.device if do_on_device else torch.device("cpu")
        if run.tile_filter is not None:
            # Tiles holding no body at all are skipped; the tiles kept sit exactly where nnU-Net puts
            # them, so every body voxel gets the same prediction as with nnU-Net's full sweep.
            slicers = [sl for sl in slicers if run.tile_filter(sl)]
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
            group = self.tiles_per_call(run)
            for g in range(0, n, group):
                self._check_cancel()
                chunk = slicers[g:g + group]
                workon = torch.cat([data[sl][None] for sl in chunk], 0).contiguous().to(self.device)
                if self.network_dtype is not None:
                    workon = workon.to(self.network_dtype)
                preds = self.predict_tile(workon, run)
                for j, sl in enumerate(chunk):
                    prediction = preds[j].to(results_device)
                    if self.use_gaussian:
                        prediction *= gaussian
                    predicted_logits[sl] += prediction
                    n_predictions[sl[1:]] += gaussian
                    if run.tile_callback is not None:
                        run.tile_callback(run.tiles_done_before + g + j + 1, run.tiles_total or n)
                    self._check_cancel()   # honoured per tile, as without batching
                del preds
            if run.tile_filter is not None:
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
                run.fell_back_to_host_memory = True
            del predicted_logits, n_predictions, prediction, gaussian, workon
            empty_device_cache(self.device)
            raise

    network_dtype = None  # torch.float16 for the reduced-memory retry on a GPU (set at load)
    channels_last = False  # channels_last_3d input (the network is converted alongside; set per device)
    current_parameters = None  # the fold weights the network holds now (set by the pipeline at load)

    def mirror_combinations(self, run: PredictRun) -> int:
        """How many passes a tile gets with the run's mirroring (1 without)."""
        axes = self.allowed_mirroring_axes if run.use_mirroring else None
        return 1 if axes is None else 2 ** len(axes)

    def sliding_window_slicers(self, image_size, tile_step_size: float) -> list[tuple]:
        """nnU-Net's 3D tile grid (``compute_steps_for_sliding_window``, same order) for a padded spatial size."""
        patch = [int(p) for p in self.configuration_manager.patch_size]
        steps = compute_steps_for_sliding_window(tuple(int(s) for s in image_size), patch, tile_step_size)
        return [tuple([slice(None), *[slice(int(si), int(si) + ti) for si, ti in zip(start, patch)]])
                for start in itertools.product(*steps)]

    @torch.inference_mode()
    def _sliding_window(self, input_image: torch.Tensor, run: PredictRun) -> torch.Tensor:
        """nnU-Net's predict_sliding_window_return_logits with the run's step: pad to the patch, sweep (on the
        GPU; results moved to host memory and retried on an out-of-memory RuntimeError, as nnU-Net does), crop
        the padding off."""
        self.network.eval()
        empty_device_cache(self.device)
        cuda = self.device.type == "cuda"
        with torch.autocast("cuda", enabled=True) if cuda else contextlib.nullcontext():
            data, revert = pad_nd_image(input_image, self.configuration_manager.patch_size, "constant",
                                        {"value": 0}, True, None)
            slicers = self.sliding_window_slicers(data.shape[1:], run.tile_step_size)
            if self.perform_everything_on_device and self.device.type != "cpu":
                try:
                    logits = self._sweep(data, slicers, run, True)
                except RuntimeError:       # Cancelled is not one: a cancel is never retried
                    log.info("prediction on the device ran out of memory; results moved to host memory")
                    empty_device_cache(self.device)
                    logits = self._sweep(data, slicers, run, False)
            else:
                logits = self._sweep(data, slicers, run, self.perform_everything_on_device)
            empty_device_cache(self.device)
            return logits[(slice(None), *revert[1:])]

    # -- our own fold loop (nnU-Net's predict_logits_from_preprocessed_data resets thread counts) ----
    @torch.inference_mode()
    def predict_logits(self, data: torch.Tensor, run: PredictRun) -> torch.Tensor:
        """Logits (c, *spatial) for preprocessed ``data`` (1, *spatial), averaged over ``run.parameters``.

        With one fold the result stays on the results device (a GPU keeps it for resampling there)."""
        with self._running(run):
            prediction = None
            folds = len(run.parameters)
            n_tiles = self.count_tiles(data.shape, run)
            run.tiles_total = n_tiles * folds
            for k, params in enumerate(run.parameters):
                self._check_cancel()
                run.tiles_done_before = k * n_tiles
                if k > 0 or folds > 1 or self.current_parameters is not params:
                    self.network.load_state_dict(params)
                    self.current_parameters = params
                logits = self._sliding_window(data, run)
                if folds == 1:
                    return logits
                logits = logits.to("cpu", torch.float32)
                prediction = logits if prediction is None else prediction.add_(logits)
            prediction /= folds
            return prediction.half()

    def count_tiles(self, preprocessed_shape, run: PredictRun) -> int:
        """Number of sliding-window tiles the run predicts for a preprocessed (c, *spatial) array (after padding)."""
        patch = self.configuration_manager.patch_size
        padded = [max(int(s), int(p)) for s, p in zip(preprocessed_shape[1:], patch)]
        slicers = self.sliding_window_slicers(padded, run.tile_step_size)
        if run.tile_filter is not None:
            slicers = [sl for sl in slicers if run.tile_filter(sl)]
        return len(slicers)


def predictor_class():
    """The ``LiverPlanPredictor`` class (kept for callers that imported it through this function)."""
    return LiverPlanPredictor
