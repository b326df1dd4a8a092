"""Synthetic phantom cohorts (engine.phantom) for the demo model and the end-to-end tests."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from ..case import Case

#: The demo model's cohort: full-abdomen phantoms (240 x 320 x 320 mm) at 2.5 mm isotropic voxels.
DEMO_PHANTOM_SHAPE = (96, 128, 128)
DEMO_PHANTOM_SPACING = (2.5, 2.5, 2.5)


def phantom_cohort(n: int, first_seed: int = 1000, shape: Sequence[int] = DEMO_PHANTOM_SHAPE,
                   spacing: Optional[Sequence[float]] = DEMO_PHANTOM_SPACING,
                   prefix: str = "phantom") -> list[tuple[str, Callable[[], Case]]]:
    """``n`` (case id, loader) pairs; phantom i is ``make_phantom(seed=first_seed + i, shape, spacing)``.

    Loaders build each phantom only when called, so a cohort never sits in memory at once.
    """
    from ..phantom import make_phantom

    def loader(seed: int) -> Callable[[], Case]:
        return lambda: make_phantom(seed=seed, shape=tuple(shape), spacing=tuple(spacing) if spacing else None)

    return [(f"{prefix}{first_seed + i:04d}", loader(first_seed + i)) for i in range(int(n))]
