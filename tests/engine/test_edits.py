"""Hand edits and undo: what a clinician correcting a mask would notice."""
import numpy as np
import pytest

from engine import edits
from engine.edits import EditHistory, Stroke


SPACING = (2.0, 1.0, 1.0)  # (z, y, x) mm: anisotropic on purpose


def _blank(shape=(20, 40, 40)):
    return np.zeros(shape, np.uint8)


def test_sphere_brush_is_round_in_millimetres():
    lab = _blank()
    r = edits.brush(lab, (10, 20, 20), 6.0, SPACING, 1)
    assert r is not None
    zs, ys, xs = np.nonzero(lab)
    # 6 mm radius: 3 slices each way at 2 mm, 6 voxels each way at 1 mm.
    assert zs.min() == 7 and zs.max() == 13
    assert xs.min() == 14 and xs.max() == 26
    vol_ml = lab.sum() * np.prod(SPACING) / 1000
    assert vol_ml == pytest.approx(4 / 3 * np.pi * 6 ** 3 / 1000, rel=0.15)


def test_disc_brush_paints_one_slice_of_the_chosen_plane():
    lab = _blank()
    edits.brush(lab, (10, 20, 20), 5.0, SPACING, 2, sphere=False, plane_axis=0)
    assert set(np.unique(np.nonzero(lab)[0])) == {10}
    lab2 = _blank()
    edits.brush(lab2, (10, 20, 20), 5.0, SPACING, 2, sphere=False, plane_axis=2)
    assert set(np.unique(np.nonzero(lab2)[2])) == {20}


def test_paint_rules_and_hu_range():
    lab = _blank()
    lab[:, :, :20] = 1       # liver on the left half
    lab[10, 20, 15] = 4      # an IVC voxel that must not be overwritten with rule "background"
    img = np.full(lab.shape, 100, np.int16)
    img[:, 25:, :] = -50     # fat below y=25
    e = edits.brush(lab, (10, 20, 20), 8.0, SPACING, 5, rule="liver")
    assert e is not None
    assert not np.any(lab[:, :, 20:] == 5), "'inside liver only' painted outside the liver"
    lab = _blank(); lab[10, 20, 15] = 4
    edits.brush(lab, (10, 20, 20), 8.0, SPACING, 2, rule="background")
    assert lab[10, 20, 15] == 4
    lab = _blank()
    edits.brush(lab, (10, 20, 20), 8.0, SPACING, 2, image=img, hu_range=(50, 300))
    assert not np.any(lab[:, 25:, :]) and np.any(lab[:, :25, :])


def test_eraser_removes_only_the_active_structure():
    lab = _blank(); lab[5:15, 10:30, 10:30] = 1; lab[8:12, 18:22, 18:22] = 5
    edits.brush(lab, (10, 20, 20), 20.0, SPACING, 5, erase=True)
    assert not np.any(lab == 5) and np.count_nonzero(lab == 1) > 0


def test_stroke_is_one_step_and_undo_restores_exactly():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (20, 40, 40)).astype(np.uint8)
    orig = lab.copy()
    h = EditHistory(lab)
    s = Stroke(lab)
    for x in range(5, 35, 3):
        s.add(edits.brush(lab, (10, 10 + x // 2, x), 3.0, SPACING, 4))
    h.commit("Brush", s.region())
    painted = lab.copy()
    assert h.can_undo and h.undo_description == "Brush" and len(h._undo) == 1
    h.undo()
    np.testing.assert_array_equal(lab, orig)
    assert not h.is_modified
    h.redo()
    np.testing.assert_array_equal(lab, painted)
    assert h.is_modified


def test_new_edit_clears_redo_and_history_is_bounded_by_bytes():
    lab = _blank((30, 64, 64))
    h = EditHistory(lab, max_bytes=40_000)
    for i in range(10):
        h.apply(f"dab {i}", edits.brush, (15, 32, 32), 10.0, SPACING, 1 + i % 5)
    assert h.nbytes <= 40_000 or len(h._undo) == 1
    assert len(h._undo) < 10
    h.undo()
    assert h.can_redo
    h.apply("other", edits.brush, (5, 5, 5), 2.0, SPACING, 3)
    assert not h.can_redo


def test_step_stores_only_the_changed_box():
    lab = _blank((50, 100, 100))
    h = EditHistory(lab)
    e = h.apply("dab", edits.brush, (25, 50, 50), 3.0, (1, 1, 1), 1)
    assert e.before.size <= 7 ** 3 and e.labels_touched == frozenset({0, 1})


def test_flood_fill_stays_in_its_slice_and_region():
    lab = _blank()
    lab[:, 10:30, 10:30] = 1
    lab[:, 15:25, 15:25] = 0   # a hole in every slice
    e = edits.flood_fill_slice(lab, (7, 20, 20), 0, 5)
    assert e is not None
    assert np.count_nonzero(lab == 5) == 100
    assert np.all(lab[7, 15:25, 15:25] == 5) and not np.any(lab[6] == 5)


def test_delete_component_removes_one_false_lesion_and_refills_liver():
    lab = _blank(); lab[2:18, 5:35, 5:35] = 1
    lab[5:8, 10:13, 10:13] = 5     # lesion A
    lab[12:15, 25:28, 25:28] = 5   # lesion B
    edits.delete_component(lab, (6, 11, 11))
    assert np.all(lab[5:8, 10:13, 10:13] == 1), "false lesion inside the liver must become liver"
    assert np.all(lab[12:15, 25:28, 25:28] == 5)
    assert edits.delete_component(lab, (0, 0, 0)) is None  # background: nothing


def test_keep_largest_and_fill_holes():
    lab = _blank(); lab[2:18, 5:30, 5:30] = 1; lab[1, 35:38, 35:38] = 1
    lab[8:12, 15:20, 15:20] = 0; lab[9, 16, 16] = 2
    edits.keep_largest_component(lab, 1)
    assert not np.any(lab[1, 35:38, 35:38])
    edits.fill_holes(lab, 1)
    assert np.all(lab[8:12, 15:20, 15:20][lab[8:12, 15:20, 15:20] != 2] == 1)
    assert lab[9, 16, 16] == 2, "fill holes must keep vessels/lesions inside the liver"


def test_replace_all_is_one_undoable_step():
    lab = _blank(); lab[5, 5, 5] = 1
    h = EditHistory(lab)
    new = _blank(); new[10:12, 10:20, 10:20] = 1
    h.apply("Segmentation", edits.replace_all, new)
    np.testing.assert_array_equal(lab, new)
    h.undo()
    assert lab[5, 5, 5] == 1 and lab.sum() == 1


def test_fast_drag_leaves_no_gap():
    pts = edits.stroke_points((5, 5, 5), (5, 5, 35), SPACING, 2.0)
    lab = _blank()
    for p in [(5, 5, 5)] + pts:
        edits.brush(lab, p, 2.0, SPACING, 1, sphere=False)
    assert np.all(lab[5, 5, 5:36] == 1)


def test_redo_of_a_one_row_stroke():
    lab = _blank()
    h = EditHistory(lab)
    h.apply("row", edits.brush, (10, 12, 20), 0.5, SPACING, 4)
    painted = lab.copy()
    h.undo()
    h.redo()
    np.testing.assert_array_equal(lab, painted)


def test_voxel_delta_matches_the_change():
    lab = _blank(); lab[5:15, 10:30, 10:30] = 1
    h = EditHistory(lab)
    counts = np.bincount(lab.ravel(), minlength=6)
    e = h.apply("dab", edits.brush, (10, 20, 20), 4.0, SPACING, 5)
    after = np.bincount(lab.ravel(), minlength=6)
    assert e.delta() == {int(k): int(after[k] - counts[k]) for k in range(6) if after[k] != counts[k]}
    assert e.delta(undo=True)[5] == -e.delta()[5]


def _whole_volume_component(lab, seed):
    import cc3d
    cc = cc3d.connected_components(lab == lab[seed], connectivity=26)
    return cc == cc[seed]


def test_delete_component_finds_the_whole_component_far_beyond_the_seed():
    """The component is found locally from the clicked voxel; a shape that leaves the first search box,
    winds back and touches the volume's border must still be removed whole, and nothing else."""
    lab = np.zeros((30, 200, 200), np.uint8)
    lab[:, :, :] = 1
    # A long U-shaped "lesion": out 150 voxels, over, back again, reaching the volume's x border.
    lab[10:13, 20:23, 20:170] = 5
    lab[10:13, 20:120, 167:170] = 5
    lab[10:13, 117:120, 0:170] = 5
    lab[20:23, 20:23, 100:103] = 5           # joined only through a diagonal (26-connected) step below
    lab[13:20, 21, 101] = 5
    lab[25:28, 150:160, 150:160] = 5         # a separate lesion: must stay
    seed = (11, 21, 21)
    expect = _whole_volume_component(lab, seed)
    assert expect.sum() > 3 * 150 * 3
    before = lab.copy()
    r = edits.delete_component(lab, seed)
    assert r is not None
    assert np.all(lab[expect] == 1), "every voxel of the clicked component became liver"
    assert np.array_equal(lab[~expect], before[~expect]), "nothing else changed"
    assert np.all(lab[25:28, 150:160, 150:160] == 5)
    # The undo box covers the change exactly.
    assert r.box == edits.box_of_mask(expect)


def test_delete_component_matches_whole_volume_labelling_on_random_blobs():
    rng = np.random.default_rng(5)
    from scipy import ndimage
    base = (ndimage.gaussian_filter(rng.random((40, 90, 90)), 2.0) > 0.52).astype(np.uint8) * 5
    base[base == 0] = 1
    for _ in range(6):
        lab = base.copy()
        seed = tuple(int(v) for v in rng.integers(0, lab.shape))
        expect = _whole_volume_component(lab, seed)
        v = int(lab[seed])
        r = edits.delete_component(lab, seed, replace_with=0)
        assert r is not None and r.box == edits.box_of_mask(expect)
        assert np.all(lab[expect] == 0)
        assert np.array_equal(lab[~expect], base[~expect])
        assert v in (1, 5)
