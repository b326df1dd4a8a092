"""The slab-wise torch resampling equals one whole-volume trilinear interpolation + argmax."""
from __future__ import annotations

import numpy as np
import pytest

from engine.inference.resample import resample_logits_to_labels


@pytest.mark.parametrize("src,dst", [((7, 12, 10), (16, 25, 23)), ((9, 20, 20), (5, 11, 31)), ((6, 8, 8), (6, 8, 8))])
def test_matches_torch_trilinear(src, dst):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    logits = torch.randn((4, *src), generator=g)
    ref = F.interpolate(logits[None], size=dst, mode="trilinear", align_corners=False)[0].argmax(0).numpy()
    steps = []
    # a tiny slab budget forces many slabs (and slab borders) to be exercised
    got = resample_logits_to_labels(logits.half().float(), dst, progress=lambda s, d, t: steps.append(d),
                                    slab_bytes=4 * 4 * dst[1] * dst[2] * 3)
    assert got.dtype == np.uint8 and got.shape == dst
    assert (got == ref).mean() > 0.999       # ties may break differently by float rounding
    assert len(steps) > 1 or dst[0] <= 3


def test_cancel_between_slabs():
    import torch

    from engine.progress import CancelToken, Cancelled

    token = CancelToken()

    def prog(stage, done, total):
        token.cancel()

    with pytest.raises(Cancelled):
        resample_logits_to_labels(torch.randn((2, 4, 4, 4)), (40, 8, 8), cancel=token, progress=prog,
                                  slab_bytes=2 * 4 * 64)


def test_foreground_box_shortcut_is_exact():
    """Mostly background with one small foreground blob: only its neighbourhood is computed, same result."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    logits = torch.randn((3, 10, 16, 16), generator=g)
    logits[0] += 4.0                       # background wins almost everywhere
    logits[1, 4:6, 7:9, 3:5] += 8.0        # a small structure
    dst = (23, 41, 37)
    ref = F.interpolate(logits[None], size=dst, mode="trilinear", align_corners=False)[0].argmax(0).numpy()
    got = resample_logits_to_labels(logits, dst)
    assert (ref != 0).sum() > 0
    assert (got == ref).mean() > 0.9999
    assert np.array_equal(got != 0, ref != 0) or (got != ref).sum() <= 2


def test_all_background_gives_zeros_quickly():
    import torch

    logits = torch.zeros((3, 5, 6, 7))
    logits[0] = 1.0
    got = resample_logits_to_labels(logits, (50, 60, 70))
    assert got.shape == (50, 60, 70) and not got.any()
