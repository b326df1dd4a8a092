"""The portal / hepatic split of an unsplit intrahepatic vessel tree (engine.vessel_split)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.labels import Label
from engine.vessel_split import STAT_KEYS, VesselAssignment, assign_vessel_tree


def _tubes():
    """A liver block with a portal trunk (outside), an IVC, one branch touching each, and a loose piece."""
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[2:18, 5:35, 5:35] = Label.PARENCHYMA
    labels[8:11, 8:11, 0:6] = Label.PORTAL_VEIN          # the trunk entering at the hilum
    labels[0:20, 30:34, 30:34] = Label.IVC               # the IVC at the back
    vessels = np.zeros(labels.shape, bool)
    vessels[8:11, 8:11, 6:25] = True                     # a portal branch continuing the trunk
    vessels[12:15, 27:30, 12:31] = True                  # a hepatic vein draining to the IVC
    vessels[4:6, 14:16, 14:18] = True                    # a piece connected to nothing
    return labels, vessels


def test_branches_follow_the_trunk_they_connect_to_and_loose_pieces_stay_unassigned():
    labels, vessels = _tubes()
    before = labels.copy()
    res = assign_vessel_tree(labels, vessels, (2.0, 1.0, 1.0))
    assert isinstance(res, VesselAssignment) and res.labels.dtype == np.uint8
    assert np.array_equal(labels, before)                                   # input untouched
    assert np.all(res.labels[8:11, 8:11, 6:25] == Label.PORTAL_VEIN)
    assert np.all(res.labels[12:15, 27:30, 12:31] == Label.HEPATIC_VEINS)
    assert np.all(res.labels[4:6, 14:16, 14:18] == Label.VESSEL_UNASSIGNED)
    assert np.array_equal(res.labels[~vessels], labels[~vessels])          # nothing else changed
    assert set(STAT_KEYS) <= set(res.stats)
    assert res.stats["unassigned_voxels"] == 16 and res.stats["unassigned_ml"] == pytest.approx(16 * 2e-3)
    assert res.stats["vessel_voxels"] == vessels.sum()
    assert any("unassigned" in n for n in res.notes)


def test_bad_inputs_are_refused_in_words():
    labels, vessels = _tubes()
    with pytest.raises(InputError, match="same voxel grid"):
        assign_vessel_tree(labels, vessels[1:], (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        assign_vessel_tree(labels, vessels, (1.0, 0.0, 1.0))
