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


# --- accuracy: phantoms (truth by construction) and IRCADb 1.17 -----------------------------------------
PHANTOM_SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def phantom_problems():
    """Six phantom patients (2 x 1.25 x 1.25 mm) as a public model set would leave them: the portal and hepatic
    veins inside the liver merged into one vessel mask, the IVC and the extrahepatic portal trunk as seeds."""
    from engine.phantom import make_phantom
    from vessel_problems import phantom_problem

    out = []
    for seed in PHANTOM_SEEDS:
        case = make_phantom(seed=seed, shape=(160, 256, 256), spacing=(2.0, 1.25, 1.25), n_lesions=0)
        out.append((seed, *phantom_problem(case.labels, case.geometry.spacing), case.geometry.spacing))
    return out


def _pooled(problems, prepare=lambda labels: labels, per_case_floor=0.75):
    from vessel_problems import accuracy

    right = wrong = total = 0.0
    notes = []
    for seed, labels, vessels, truth, spacing in problems:
        res = assign_vessel_tree(prepare(labels), vessels, spacing)
        a = accuracy(res.labels, vessels, truth)
        assert a["right"] >= per_case_floor, (seed, a, res.notes)
        assert np.array_equal(res.labels[~vessels], prepare(labels)[~vessels])
        right += a["right"] * a["voxels"]
        wrong += a["wrong"] * a["voxels"]
        total += a["voxels"]
        notes.append(res.notes)
    return right / total, wrong / total, notes


def test_phantom_vessel_trees_are_split_right(phantom_problems):
    """>= 90 % of the vessel voxels over six patients come back in the right system, few in the wrong one
    (measured: 93.6 % right, 1.3 % wrong, 5.1 % unassigned)."""
    right, wrong, _ = _pooled(phantom_problems)
    assert right >= 0.90, right
    assert wrong <= 0.03, wrong


def test_without_a_portal_trunk_the_hilum_is_found_and_said(phantom_problems):
    """No cardiac model: the portal trunk is missing; the hilum (the thickest place where the vessels leave the
    liver low down) stands in for it, and a note says so (measured: 93.7 % right)."""
    def no_trunk(labels):
        out = labels.copy()
        out[out == Label.PORTAL_VEIN] = Label.BACKGROUND
        return out

    right, _, notes = _pooled(phantom_problems, no_trunk)
    assert right >= 0.90, right
    assert all(any("hilum was taken" in n for n in ns) for ns in notes)


def test_without_an_ivc_nothing_is_guessed():
    labels, vessels = _tubes()
    labels[labels == Label.IVC] = Label.PARENCHYMA
    res = assign_vessel_tree(labels, vessels, (2.0, 1.0, 1.0))
    assert np.all(res.labels[vessels] == Label.VESSEL_UNASSIGNED)
    assert any("No inferior vena cava" in n for n in res.notes)


def test_progress_is_reported_and_cancel_stops_it():
    from engine.progress import CancelToken, Cancelled

    labels, vessels = _tubes()
    seen = []
    assign_vessel_tree(labels, vessels, (2.0, 1.0, 1.0), progress=lambda s, d, t: seen.append((d, t)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        assign_vessel_tree(labels, vessels, (2.0, 1.0, 1.0), cancel=tok)


@pytest.mark.real
def test_ircadb_portal_vein_and_venous_system_are_told_apart():
    """IRCADb 1.17: 'portalvein' and 'venoussystem' (hepatic veins + IVC) inside the liver merged; the portal
    vein and the IVC outside it are the seeds. Measured 96.6 % right, 2.3 % wrong (README); floor 90 %."""
    from realdata import real_path

    from engine.evaluation import _geometry_of
    from engine.io import read_label_map
    from engine.labelmap import LabelMapping
    from vessel_problems import accuracy, phantom_problem

    masks = real_path("3dircadb1.17", "masks")
    geom = _geometry_of(masks / "liver.nii.gz")
    ref = read_label_map(masks, geom, LabelMapping.preset("ircadb"))
    labels, vessels, truth = phantom_problem(ref, geom.spacing, hepatic_outside=Label.IVC)
    res = assign_vessel_tree(labels, vessels, geom.spacing)
    a = accuracy(res.labels, vessels, truth)
    assert a["right"] >= 0.90 and a["wrong"] <= 0.05, (a, res.notes)


def test_a_broken_vessel_mask_is_joined_across_its_gaps(phantom_problems, monkeypatch):
    """Model outputs break: 40 gaps of 6 mm cut into thin branches leave pieces connected to neither trunk.
    Joining each piece to the branch it points to assigns more of them without more errors (measured, six
    phantoms pooled: 88.2 % right / 3.3 % wrong with the joining, 86.1 % / 3.2 % without)."""
    import engine.vessel_split as vs
    from vessel_problems import with_gaps

    broken = []
    for seed, labels, vessels, truth, spacing in phantom_problems:
        v = with_gaps(vessels, spacing)
        lab = labels.copy()
        lab[vessels & ~v] = Label.PARENCHYMA
        broken.append((seed, lab, v, truth, spacing))
    right, wrong, notes = _pooled(broken, per_case_floor=0.7)
    monkeypatch.setattr(vs, "BRIDGE_MM", 0.0)
    right0, wrong0, _ = _pooled(broken, per_case_floor=0.7)
    assert right >= 0.85 and right >= right0 + 0.015, (right, right0)
    assert wrong <= wrong0 + 0.01, (wrong, wrong0)
    assert any(any("joined to the branch they point to" in n for n in ns) for ns in notes)


def test_a_grid_too_coarse_to_follow_the_tree_leaves_every_vessel_unassigned_and_says_so():
    """4 mm in-plane voxels merge touching portal branches and hepatic veins: no confident wrong answer."""
    from tiny_model import small_phantom

    ph = small_phantom(seed=5, shape=(48, 80, 80), spacing=(5.0, 4.0, 4.0))
    truth = ph.labels
    labels = truth.copy()
    hv = truth == Label.HEPATIC_VEINS
    labels[hv] = Label.VESSEL_UNASSIGNED
    res = assign_vessel_tree(labels, hv, (5.0, 4.0, 4.0))
    assert (res.labels[hv] == Label.VESSEL_UNASSIGNED).all()
    assert (res.labels[~hv] == labels[~hv]).all()
    assert any("too coarse" in n for n in res.notes)
    assert res.stats["unassigned_voxels"] == hv.sum()
