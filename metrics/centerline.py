"""clDice (centerline Dice) of Shit et al., CVPR 2021, with scikit-image's 3D (Lee) skeletonization.

    Tprec = |S(P) ∩ R| / |S(P)|     (topology precision: prediction skeleton inside the reference)
    Tsens = |S(R) ∩ P| / |S(R)|     (topology sensitivity: reference skeleton inside the prediction)
    clDice = 2 · Tprec · Tsens / (Tprec + Tsens)

S(X) is ``skimage.morphology.skeletonize(X)`` (Lee 1994 thinning, 26-connected foreground), so the value
equals the reference implementation (github.com/jocpae/clDice, ``clDice(v_p, v_l)``). Unitless, in [0, 1].

Empty masks (:mod:`metrics.policy`): both empty -> NaN; exactly one empty -> 0 (the other's skeleton is
not covered at all, so one factor is 0). A non-empty mask whose skeleton is EMPTY (Lee thinning deletes
some even-thickness objects entirely, e.g. a 2x2-voxel rod) makes clDice undefined: NaN, with the reason
in :attr:`ClDiceResult.reason` — never 0 or 1.

Speed: thinning dominates (scikit-image's Lee thinning holds the GIL, so threads do not help). It is run
on the tight bounding box of each 26-connected component separately (the thinning of one component never
looks at another, which lies >= 1 background voxel away, so the union of the per-component skeletons is the
whole-mask skeleton); large masks can be thinned in worker processes (:func:`skeletons`), and recent
skeletons are cached by content (re-evaluating after an edit, or against the same reference, does not
thin the same mask twice).
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from . import _grid, policy

try:
    import cc3d  # type: ignore
except ImportError:  # pragma: no cover
    cc3d = None

log = logging.getLogger(__name__)

#: Masks (cropped) with at least this many voxels are thinned in a worker process when asked to.
PROCESS_MIN_VOXELS = 1_500_000
#: Bytes of skeletons kept in the content cache.
CACHE_MAX_BYTES = 256 * 1024 * 1024

_cache: "OrderedDict[bytes, np.ndarray]" = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()
_pool = None
_pool_lock = threading.Lock()


def _key(m: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    h.update(np.asarray(m.shape, np.int64).tobytes())
    h.update(np.packbits(m, axis=None).tobytes())
    return h.digest()


def _cache_get(key: bytes) -> Optional[np.ndarray]:
    with _cache_lock:
        v = _cache.get(key)
        if v is not None:
            _cache.move_to_end(key)
        return v


def _cache_put(key: bytes, skel: np.ndarray) -> None:
    global _cache_bytes
    with _cache_lock:
        if key in _cache:
            return
        _cache[key] = skel
        _cache_bytes += skel.nbytes
        while _cache_bytes > CACHE_MAX_BYTES and _cache:
            _, old = _cache.popitem(last=False)
            _cache_bytes -= old.nbytes


def clear_cache() -> None:
    """Forget cached skeletons."""
    global _cache_bytes
    with _cache_lock:
        _cache.clear()
        _cache_bytes = 0


@dataclass(frozen=True)
class ClDiceResult:
    """clDice with its two factors; ``reason`` says why a value is NaN or set by policy ('' if computed)."""

    cldice: float
    tprec: float
    tsens: float
    reason: str = ""


def skeleton(mask: np.ndarray, use_cache: bool = True) -> np.ndarray:
    """Lee skeleton (bool, same shape) of a boolean (z, y, x) mask, component by component.

    Identical to ``skimage.morphology.skeletonize(mask)``. Results are cached by mask content.
    """
    m = np.asarray(mask, dtype=bool)
    if not use_cache:
        return _skeleton_uncached(m)
    key = _key(m)
    hit = _cache_get(key)
    if hit is not None:
        return hit.copy()
    out = _skeleton_uncached(m)
    _cache_put(key, out.copy())
    return out


def _skeleton_packed(shape: tuple[int, int, int], packed: bytes) -> bytes:
    """Worker-process entry: skeleton of a bit-packed mask, returned bit-packed."""
    n = int(np.prod(shape))
    m = np.unpackbits(np.frombuffer(packed, np.uint8), count=n).astype(bool).reshape(shape)
    return np.packbits(_skeleton_uncached(m), axis=None).tobytes()


def _get_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            _pool = ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)), mp_context=ctx)
            atexit.register(shutdown_pool)
        return _pool


def shutdown_pool() -> None:
    """Stop the skeleton worker processes (started on first use by :func:`skeletons`)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


def skeletons(masks: Sequence[np.ndarray], processes: bool = True) -> list[np.ndarray]:
    """Skeletons of several masks; large ones (>= PROCESS_MIN_VOXELS) thinned in parallel worker processes.

    Results equal :func:`skeleton`'s. Falls back to in-process thinning if worker processes cannot run.
    """
    ms = [np.asarray(m, dtype=bool) for m in masks]
    out: list[Optional[np.ndarray]] = [None] * len(ms)
    keys = [_key(m) for m in ms]
    futures = {}
    for i, (m, k) in enumerate(zip(ms, keys)):
        hit = _cache_get(k)
        if hit is not None:
            out[i] = hit.copy()
        elif processes and m.size >= PROCESS_MIN_VOXELS:
            try:
                futures[i] = _get_pool().submit(_skeleton_packed, m.shape, np.packbits(m, axis=None).tobytes())
            except Exception as exc:  # no worker processes here (sandbox, frozen app quirks): thin in-process
                log.info("skeleton worker processes unavailable (%s); thinning in-process", exc)
    for i, m in enumerate(ms):
        if out[i] is None and i not in futures:
            out[i] = skeleton(m)
    for i, f in futures.items():
        try:
            packed = f.result()
            sk = np.unpackbits(np.frombuffer(packed, np.uint8), count=ms[i].size).astype(bool).reshape(ms[i].shape)
            _cache_put(keys[i], sk.copy())
        except Exception as exc:
            log.info("skeleton worker failed (%s); thinning in-process", exc)
            sk = skeleton(ms[i])
        out[i] = sk
    return out  # type: ignore[return-value]


def _skeleton_uncached(m: np.ndarray) -> np.ndarray:
    out = np.zeros(m.shape, dtype=bool)
    box = _grid.bbox(m)
    if box is None:
        return out
    sub = m[box]
    if cc3d is not None:
        labels, n = cc3d.connected_components(sub, connectivity=26, return_N=True)
    else:
        labels, n = ndi.label(sub, structure=np.ones((3, 3, 3), bool))
    sub_out = out[box]
    if n <= 1:
        sub_out[...] = skeletonize(sub)
        return out
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == i
        sk = skeletonize(comp)
        sub_out[sl] |= sk
    return out


def cldice(pred: np.ndarray, ref: np.ndarray, skel_pred: np.ndarray | None = None,
           skel_ref: np.ndarray | None = None, processes: bool = False) -> ClDiceResult:
    """clDice of two boolean (z, y, x) masks of one shape (module docstring for formula and policy).

    ``skel_pred`` / ``skel_ref``: precomputed skeletons to avoid re-thinning. ``processes``: thin large
    masks in worker processes (see :func:`skeletons`).
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} differ in shape")
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    status = policy.emptiness(n_p, n_r)
    if status == policy.BOTH_EMPTY:
        return ClDiceResult(policy.NAN, policy.NAN, policy.NAN, "both masks are empty")
    if status != policy.OK:
        return ClDiceResult(0.0, 0.0, 0.0, "one mask is empty: its skeleton covers nothing of the other")
    box = _grid.union_box(_grid.bbox(p), _grid.bbox(r))
    p, r = p[box], r[box]
    if skel_pred is None and skel_ref is None:
        sp, sr = skeletons([p, r], processes=processes)
    else:
        sp = skeleton(p) if skel_pred is None else np.asarray(skel_pred, bool)[box]
        sr = skeleton(r) if skel_ref is None else np.asarray(skel_ref, bool)[box]
    n_sp, n_sr = int(np.count_nonzero(sp)), int(np.count_nonzero(sr))
    if n_sp == 0 or n_sr == 0:
        which = "prediction" if n_sp == 0 else "reference"
        return ClDiceResult(policy.NAN, policy.NAN, policy.NAN,
                            f"the {which} skeleton is empty (Lee thinning removed the whole object, as it "
                            "does for some even-thickness shapes): clDice is undefined")
    tprec = np.count_nonzero(sp & r) / n_sp
    tsens = np.count_nonzero(sr & p) / n_sr
    if tprec + tsens == 0:
        return ClDiceResult(0.0, 0.0, 0.0)
    value = 2.0 * tprec * tsens / (tprec + tsens)
    return ClDiceResult(float(value), float(tprec), float(tsens))


def cldice_value(pred: np.ndarray, ref: np.ndarray) -> float:
    """clDice as a plain float (NaN where undefined)."""
    v = cldice(pred, ref).cldice
    return float(v) if not math.isnan(v) else policy.NAN
