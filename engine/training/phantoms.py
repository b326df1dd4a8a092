"""Synthetic phantom cohorts (engine.phantom) for the demo model and the end-to-end tests."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from ..case import Case

#: The demo model's cohort: full-abdomen phantoms (240 x 320 x 320 mm) at 2.5 mm isotropic voxels.
DEMO_PHANTOM_SHAPE = (96, 128, 128)
DEMO_PHANTOM_SPACING = (2.5, 2.5, 2.5)


def phantom_cohort(n: int, first_seed: int = 1000, shape: Sequence[int] = DEMO_PHANTOM_SHAPE,
                   spacing: Optional[Sequence[float]] = DEMO_PHANTOM_SPACING,
                   prefix: str = "phantom", version: int = 1, randomise: bool = False,
                   rand_seed: int = 0, lesion_appearances: bool = True) -> list[tuple[str, Callable[[], Case]]]:
    """``n`` (case id, loader) pairs; phantom i is ``make_phantom(seed=first_seed + i, shape, spacing)``.

    version 2: engine.phantom_v2 (the liver among look-alike neighbours); randomise (version 2 only): each
    case drawn with engine.training.randomise (contrast timing, densities, noise, blur, slice thickness,
    partial fields of view), reproducible from (seed, rand_seed). lesion_appearances=False (version 2): plain
    v1-like lesions (for ablations).
    Loaders build each phantom only when called, so a cohort never sits in memory at once.
    """
    from ..errors import InputError
    from ..phantom import make_phantom

    if int(version) not in (1, 2):
        raise InputError(f"There are phantom versions 1 and 2; {version} is neither.")
    if randomise and int(version) != 2:
        raise InputError("Domain randomisation works on version 2 phantoms: add --phantom-version 2.")

    def loader(seed: int) -> Callable[[], Case]:
        sp = tuple(spacing) if spacing else None
        if randomise:
            from .randomise import randomised_phantom
            if sp is None:
                from ..phantom import DEFAULT_FOV_MM
                sp = tuple(f / n for f, n in zip(DEFAULT_FOV_MM, shape))
            return lambda: randomised_phantom(seed, tuple(shape), sp, rand_seed, lesion_appearances)
        if int(version) == 2:
            from ..phantom_v2 import make_phantom_v2
            return lambda: make_phantom_v2(seed=seed, shape=tuple(shape), spacing=sp,
                                           lesion_appearances=lesion_appearances)
        return lambda: make_phantom(seed=seed, shape=tuple(shape), spacing=sp)

    return [(f"{prefix}{first_seed + i:04d}", loader(first_seed + i)) for i in range(int(n))]
