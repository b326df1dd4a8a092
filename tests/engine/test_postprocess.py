"""Post-processing rules on analytic shapes."""
from __future__ import annotations

import numpy as np

from engine.labels import Label
from engine.postprocess import PostprocessOptions, postprocess

SPACING = (2.0, 1.0, 1.0)


def _ball(shape, centre, r, spacing=SPACING):
    zz, yy, xx = np.indices(shape)
    d = ((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2 + ((xx - centre[2]) * spacing[2]) ** 2
    return d <= r * r


def _scene():
    shape = (30, 80, 80)
    lab = np.zeros(shape, np.uint8)
    lab[_ball(shape, (15, 40, 30), 20)] = Label.PARENCHYMA          # the liver
    lab[_ball(shape, (15, 40, 70), 5)] = Label.PARENCHYMA           # a stray liver-like blob
    lab[_ball(shape, (15, 40, 30), 5)] = Label.CRLM                 # lesion inside the liver
    lab[_ball(shape, (15, 10, 70), 3)] = Label.CRLM                 # "lesion" far from the liver
    lab[10:20, 40, 20:40] = Label.PORTAL_VEIN                       # a vessel through the liver (200 vox)
    lab[2, 75, 2] = Label.HEPATIC_VEINS                             # a one-voxel speck outside
    lab[15, 45, 25] = Label.IVC                                     # a speck inside the liver
    return lab


def test_rules_on_an_analytic_scene():
    lab = _scene()
    before = lab.copy()
    out, rec = postprocess(lab, SPACING, PostprocessOptions(min_vessel_ml=0.05))
    assert np.array_equal(lab, before), "input modified"
    # largest liver kept, stray blob removed
    assert not (out[_ball(lab.shape, (15, 40, 70), 5)] == Label.PARENCHYMA).any()
    assert (out == Label.PARENCHYMA).sum() > 10000
    # lesion inside kept, far one removed
    inner = _ball(lab.shape, (15, 40, 30), 5) & (lab == Label.CRLM)
    assert inner.sum() > 100 and (out[inner] == Label.CRLM).all()
    assert not (out[_ball(lab.shape, (15, 10, 70), 3)] == Label.CRLM).any()
    assert rec["changes"]["lesions_removed"] == 1
    # the vessel survives, the specks do not
    assert (out[10:20, 40, 20:40] == Label.PORTAL_VEIN).all()
    assert out[2, 75, 2] == 0
    assert out[15, 45, 25] == 0          # IVC speck: background (the IVC is not liver)
    assert rec["options"]["lesion_margin_mm"] == 5.0


def test_lesion_just_outside_the_liver_kept_within_margin():
    shape = (20, 60, 60)
    lab = np.zeros(shape, np.uint8)
    lab[:, :, :30] = Label.PARENCHYMA
    lab[8:12, 20:24, 33:36] = Label.CRLM            # 3 mm from the liver edge (x spacing 1 mm)
    out, _ = postprocess(lab, SPACING, PostprocessOptions(lesion_margin_mm=5.0))
    assert (out == Label.CRLM).sum() == (lab == Label.CRLM).sum()
    out2, _ = postprocess(lab, SPACING, PostprocessOptions(lesion_margin_mm=2.0))
    assert not (out2 == Label.CRLM).any()


def test_empty_and_liverless_maps_are_left_alone():
    empty = np.zeros((5, 6, 7), np.uint8)
    out, _ = postprocess(empty, SPACING)
    assert not out.any()
    lesion_only = empty.copy()
    lesion_only[1:4, 2:5, 2:5] = Label.CRLM          # 54 mm3: above the tiny-lesion size
    out, rec = postprocess(lesion_only, SPACING)
    assert (out == Label.CRLM).sum() == 27
    assert "no liver" in str(rec["changes"]["lesions_removed"])


def test_touching_lesion_on_thick_slices_is_judged_by_distance_not_by_contact():
    # 6 mm slices: a lesion touching the liver only diagonally across a slice is 6.0+ mm away, so a 5 mm
    # margin removes it although it is a 26-neighbour; one in the same slice (0.7 mm away) stays.
    sp = (6.0, 0.7, 0.7)
    lab = np.zeros((6, 40, 40), np.uint8)
    lab[0:3, :, :20] = Label.PARENCHYMA
    lab[3, 10:14, 20:24] = Label.CRLM               # next slice, diagonal contact only
    lab[1, 30:34, 20:24] = Label.CRLM               # same slice, touching
    out, rec = postprocess(lab, sp, PostprocessOptions(lesion_margin_mm=5.0))
    assert not (out[3, 10:14, 20:24] == Label.CRLM).any()
    assert (out[1, 30:34, 20:24] == Label.CRLM).all()
    assert rec["changes"]["lesions_removed"] == 1


def test_many_scattered_lesions_match_a_whole_volume_distance_map():
    # The fast rule (contacts + per-lesion boxes) against the definition: any voxel within the margin of
    # the kept parenchyma, measured with one Euclidean distance map of the whole volume.
    from scipy import ndimage

    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 6, size=(9, 17, 17)).astype(np.uint8)
    coarse[coarse == 1] = 0
    lab = np.kron(coarse, np.ones((3, 3, 3), np.uint8))[:24, :48, :48].copy()
    lab[6:18, 12:36, 12:36] = Label.PARENCHYMA
    lab[rng.random(lab.shape) < 0.01] = Label.CRLM
    opts = PostprocessOptions(keep_largest_liver=False, remove_small_vessel_fragments=False,
                              remove_vessels_away_from_liver=False, remove_tiny_lesions=False,
                              lesion_margin_mm=3.0)
    out, rec = postprocess(lab, SPACING, opts)
    dist = ndimage.distance_transform_edt(lab != Label.PARENCHYMA, sampling=SPACING)
    import cc3d
    cc = cc3d.connected_components(lab == Label.CRLM, connectivity=26)
    near = np.unique(cc[(dist <= 3.0) & (cc > 0)])
    expected = (cc > 0) & ~np.isin(cc, near)
    assert expected.any() and (~expected & (cc > 0)).any()       # both kinds occur
    assert np.array_equal(out == Label.CRLM, (cc > 0) & ~expected)


def test_fortran_ordered_input_gives_the_same_result():
    lab = _scene()
    a, ra = postprocess(lab, SPACING, PostprocessOptions(min_vessel_ml=0.05))
    b, rb = postprocess(np.asfortranarray(lab), SPACING, PostprocessOptions(min_vessel_ml=0.05))
    assert np.array_equal(a, b) and ra["changes"] == rb["changes"]


def test_lesions_smaller_than_3_mm_become_liver_whatever_the_voxel_size():
    # The limit is a volume in mm3 (a 3 mm sphere, 14.1 mm3), not a voxel count: the same lesions drawn on a
    # fine and on a coarse grid give the same verdict.
    for sp in ((0.5, 0.5, 0.5), (1.0, 0.8, 0.8)):
        shape = tuple(int(round(60 / s)) for s in sp)
        lab = np.zeros(shape, np.uint8)
        lab[_ball(shape, tuple(n // 2 for n in shape), 25, sp)] = Label.PARENCHYMA
        c = [n // 2 for n in shape]
        small = _ball(shape, (c[0], c[1] - int(10 / sp[1]), c[2]), 1.2, sp)       # 2.4 mm across
        big = _ball(shape, (c[0], c[1] + int(10 / sp[1]), c[2]), 2.5, sp)         # 5 mm across
        lab[small] = Label.CRLM
        lab[big] = Label.CRLM
        out, rec = postprocess(lab, sp)
        assert (out[small] == Label.PARENCHYMA).all(), sp
        assert (out[big] == Label.CRLM).all(), sp
        assert rec["changes"]["tiny_lesions_removed"] == 1
        kept, _ = postprocess(lab, sp, PostprocessOptions(remove_tiny_lesions=False))
        assert (kept[small] == Label.CRLM).all()


def test_vessel_pieces_far_from_the_liver_are_removed_but_not_the_main_vessel():
    sp = (2.0, 1.0, 1.0)
    shape = (60, 100, 120)
    lab = np.zeros(shape, np.uint8)
    lab[10:40, 20:80, 10:60] = Label.PARENCHYMA                  # the liver: x 10-59 mm
    lab[:, 45:55, 62:72] = Label.IVC                            # the IVC: 2 mm from the liver, whole height
    lab[45:55, 45:55, 100:110] = Label.IVC                      # an "IVC" blob 40 mm from the liver
    lab[30:35, 25:30, 62:67] = Label.PORTAL_VEIN                # a portal-vein piece 3 mm from the liver
    lab[30:35, 85:90, 62:67] = Label.PORTAL_VEIN                # ... and one 10+ mm away (x 62, y 85)
    lab[15:35, 50, 20:50] = Label.PORTAL_VEIN                   # the portal vein inside the liver (largest)
    out, rec = postprocess(lab, sp)
    assert (out[:, 45:55, 62:72] == Label.IVC).all()
    assert not out[45:55, 45:55, 100:110].any()
    assert (out[30:35, 25:30, 62:67] == Label.PORTAL_VEIN).all()   # within 10 mm: kept
    assert (out[15:35, 50, 20:50] == Label.PORTAL_VEIN).all()
    ch = rec["changes"]
    assert ch["ivc_pieces_away_from_liver_removed"] == 1
    assert ch["ivc_pieces_away_from_liver_removed_ml"] == round(10 * 10 * 10 * 2 / 1000, 3)
    # the far portal-vein piece: y 85-89 is 6+ mm past the liver's y 79, x 62 is 3 mm past its x 59: 6.7+ mm
    # away in y and x combined -> kept at 10 mm, removed at 5 mm
    assert (out[30:35, 85:90, 62:67] == Label.PORTAL_VEIN).all()
    out5, rec5 = postprocess(lab, sp, PostprocessOptions(vessel_margin_mm=5.0))
    assert not out5[30:35, 85:90, 62:67].any()
    assert (out5[30:35, 25:30, 62:67] == Label.PORTAL_VEIN).all()    # 3 mm away (x 62 vs 59, y inside)
    # the largest IVC component stays even when it runs far from the liver
    far_main = np.zeros(shape, np.uint8)
    far_main[10:40, 20:80, 10:60] = Label.PARENCHYMA
    far_main[:, 45:55, 90:100] = Label.IVC
    out, _ = postprocess(far_main, sp)
    assert (out[:, 45:55, 90:100] == Label.IVC).all()
    # switched off: kept
    out_off, _ = postprocess(lab, sp, PostprocessOptions(remove_vessels_away_from_liver=False))
    assert (out_off[45:55, 45:55, 100:110] == Label.IVC).all()


def test_a_small_vessel_fragment_inside_the_liver_leaves_no_hole():
    # 27 voxels (54 mm3 < 0.1 mL) in the liver: all of it, its centre included (no parenchyma among the
    # centre's neighbours), becomes liver.
    lab = np.zeros((20, 30, 30), np.uint8)
    lab[2:18, 2:28, 2:28] = Label.PARENCHYMA
    lab[9:12, 14:17, 14:17] = Label.HEPATIC_VEINS
    out, rec = postprocess(lab, SPACING)
    assert (out[2:18, 2:28, 2:28] == Label.PARENCHYMA).all()
    assert rec["changes"]["hepatic_veins_fragments_removed"] == 1
