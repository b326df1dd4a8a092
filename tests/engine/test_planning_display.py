"""The Plan tab's paint dab (engine.planning.display.disk_voxels, the Correct tab's flat brush): exactly the
voxels of the slice whose centres lie within the radius, on an anisotropic grid, at the volume's edges too."""
from __future__ import annotations

import numpy as np
import pytest

from engine.phantom import make_phantom
from engine.planning.display import disk_voxels


@pytest.mark.parametrize("zyx", [(10, 15, 20), (0, 0, 0), (19, 29, 39), (5, 2, 37)])
def test_disk_is_the_voxels_within_the_radius_in_the_slice(zyx):
    g = make_phantom(seed=0, shape=(20, 30, 40), n_lesions=1).geometry
    sp = np.asarray(g.spacing, float)
    assert len(set(sp)) == 3                     # anisotropic: each axis's spacing matters
    grid = np.indices(tuple(g.shape))
    d2 = sum(((grid[a] - zyx[a]) * sp[a]) ** 2 for a in range(3))
    for axis in range(3):
        for r in (0.1, 2.0, 5.5, 12.0):
            want = np.flatnonzero((d2 <= r * r + 1e-9) & (grid[axis] == zyx[axis]))
            got = np.sort(disk_voxels(zyx, axis, r, g))
            assert np.array_equal(want, got), (zyx, axis, r)
            assert len(got) >= 1                 # a dab smaller than a voxel still paints the voxel clicked
