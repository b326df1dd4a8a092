"""Two time points on phantoms with a known answer (issue 22): a follow-up made from the same phantom
anatomy through a known smooth deformation, a shift and another field of view and grid, with lesions
shrunk, grown, split, vanished and new by construction (engine.compare.synthetic)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.compare import Comparison, RegistrationRefused
from engine.compare.recist import recist, volumetric
from engine.compare.match import Group
from engine.compare.synthetic import make_followup
from engine.errors import InputError
from engine.labels import Label
from engine.phantom import make_phantom

pytestmark = pytest.mark.timeout(900)

CHANGES = {1: ("shrink", 0.5), 2: ("grow", 1.5), 3: ("split",), 4: ("vanish",)}


@pytest.fixture(scope="module")
def pair():
    base = make_phantom(seed=3, shape=(112, 144, 144), n_lesions=5, lesion_diameters_mm=(30, 24, 22, 20, 16))
    fu, truth = make_followup(base, CHANGES, new_lesions=(18,))
    comp = Comparison(base, fu).run()
    return base, fu, truth, comp


def _row(comp, kind, baseline=None):
    rows = [r for r in comp.rows() if r.kind == kind and (baseline is None or baseline in r.baseline_ids)]
    assert len(rows) == 1, [(r.kind, r.baseline_ids, r.followup_ids) for r in comp.rows()]
    return rows[0]


def test_follow_up_really_differs_in_grid_and_position(pair):
    base, fu, truth, comp = pair
    assert fu.geometry.shape != base.geometry.shape and fu.geometry.spacing != base.geometry.spacing
    # the same tissue lies >= 10 mm away in the follow-up's frame (shift + rotation + deformation)
    c = np.asarray(truth.baseline_centroids_lps[5])
    assert np.linalg.norm(comp.registration.to_followup(c) - c) > 10.0


def test_registration_error_inside_the_liver_is_small(pair):
    """The known deformation: a baseline liver point x goes to T(x) in the follow-up; the truth maps T(x)
    back onto x exactly when T is right."""
    base, fu, truth, comp = pair
    liver = np.argwhere(base.labels == Label.PARENCHYMA)
    pts = base.geometry.index_to_physical(liver[np.random.default_rng(0).choice(len(liver), 400, replace=False)])
    err = np.linalg.norm(truth.to_baseline(comp.registration.to_followup(pts)) - pts, axis=1)
    assert err.mean() < 2.0 and np.percentile(err, 95) < 3.5, (err.mean(), np.percentile(err, 95))
    reg = comp.registration
    assert reg.residual_p95_mm < 3.0 and reg.residual_mean_mm < 1.5
    assert not reg.warnings


def test_every_lesion_matched_right(pair):
    base, fu, truth, comp = pair
    kinds = sorted((tuple(r.baseline_ids), r.kind) for r in comp.rows() if r.baseline_ids)
    assert kinds == [((1,), "matched"), ((2,), "matched"), ((3,), "split"), ((4,), "vanished"), ((5,), "matched")]
    split = _row(comp, "split", 3)
    assert len(split.followup_ids) == 2 and split.followup_names == ["3a", "3b"]
    new = _row(comp, "new")
    assert new.followup_names == ["6"] and new.baseline_ids == []      # new lesions get new numbers
    # identities carry across: follow-up lesion matched to baseline 2 is called "2"
    assert _row(comp, "matched", 2).followup_names == ["2"]
    assert all(r.confidence >= 0.6 for r in comp.rows() if r.kind in ("matched", "split"))


def test_volume_changes_within_5_percent(pair):
    base, fu, truth, comp = pair
    from engine.measure import measure
    # the numbers are those of each scan's own lesion table (measured in the lesions' box, full-grid indices)
    for scan, mine in ((base, comp.base_lesions), (fu, comp.fu_lesions)):
        table = {l.id: l for l in measure(scan).lesions}
        assert sorted(table) == sorted(mine)
        for k, l in table.items():
            assert mine[k].voxel_count == l.voxel_count and mine[k].bbox == l.bbox
            assert np.allclose(mine[k].centroid_lps_mm, l.centroid_lps_mm, atol=0.02)
    for lid in (1, 2, 3, 5):
        row = _row(comp, "split" if lid == 3 else "matched", lid)
        want = truth.volume_after_ml[lid]
        assert abs(row.followup_volume_ml - want) / want < 0.05, (lid, row.followup_volume_ml, want)
        base_ml = comp.base_lesions[lid].volume_ml
        assert row.volume_change_pct == pytest.approx(100 * (row.followup_volume_ml - base_ml) / base_ml, abs=0.1)
    assert _row(comp, "matched", 1).volume_change_pct == pytest.approx(-50, abs=5)
    assert _row(comp, "matched", 2).volume_change_pct == pytest.approx(50, abs=5)


def test_vanished_lesion_kept_at_its_place(pair):
    base, fu, truth, comp = pair
    row = _row(comp, "vanished", 4)
    assert row.followup_volume_ml == 0 and row.volume_change_pct == -100
    # its place on the follow-up, mapped back through the TRUE deformation, is the baseline lesion's centre
    back = truth.to_baseline(np.asarray(row.followup_lps_mm))
    assert np.linalg.norm(back - np.asarray(truth.baseline_centroids_lps[4])) < 5.0
    # inside the follow-up's field of view, in its liver
    z, y, x = (int(round(v)) for v in row.followup_zyx)
    assert fu.labels[z, y, x] in (Label.PARENCHYMA, Label.CRLM)
    assert "vanished" in comp.summary_text() and "persist" in comp.summary_text()


def test_new_lesion_flagged_at_its_place(pair):
    base, fu, truth, comp = pair
    row = _row(comp, "new")
    assert np.linalg.norm(np.asarray(row.baseline_lps_mm) - np.asarray(truth.new_lesions_lps[0])) < 5.0
    assert abs(row.followup_volume_ml - truth.new_volumes_ml[0]) / truth.new_volumes_ml[0] < 0.08


def test_repair_by_hand(pair):
    base, fu, truth, comp = pair
    fid = _row(comp, "matched", 5).followup_ids[0]
    comp.unpair(baseline=[5])
    assert _row(comp, "vanished", 5).followup_ids == []
    assert any(r.kind == "new" and r.followup_ids == [fid] for r in comp.rows())
    comp.pair([5], [fid])
    row = _row(comp, "matched", 5)
    assert row.by_hand and row.confidence == 1.0 and row.followup_names == ["5"]
    with pytest.raises(InputError, match="no lesion 99"):
        comp.pair([99], [fid])
    comp.reset_pairs()
    assert not _row(comp, "matched", 5).by_hand


def test_recist_targets_and_category(pair):
    base, fu, truth, comp = pair
    with pytest.raises(InputError, match="at most 2 target lesions per organ"):
        comp.set_targets([1, 2, 5])
    comp.set_targets([1, 2])
    rec = comp.recist()
    assert rec.category == "PD" and "new lesion" in rec.reasons[0]     # a new lesion is PD
    assert rec.baseline_sld_mm == pytest.approx(comp.base_lesions[1].axial_diameter_mm
                                                + comp.base_lesions[2].axial_diameter_mm)
    assert comp.volumetric().category == "PD"


def test_recist_rules_on_numbers():
    g = [Group("matched", [1], [1], 1.0), Group("matched", [2], [2], 1.0), Group("vanished", [3], [], 1.0),
         Group("split", [4], [3, 4], 1.0)]
    base = {1: 40.0, 2: 30.0, 3: 20.0, 4: 20.0}
    # -30 % -> PR; -29 % -> SD
    assert recist([1, 2], base, {1: 27.9, 2: 21.0}, g, 0, False).category == "PR"
    assert recist([1, 2], base, {1: 29.0, 2: 20.7}, g, 0, False).category == "SD"
    # +20 % but only +4 mm -> SD (the 5 mm rule); +20 % and +6 mm -> PD
    small = [Group("matched", [1], [1], 1.0), Group("matched", [2], [2], 1.0)]
    assert recist([1, 2], {1: 10.0, 2: 10.0}, {1: 12.0, 2: 12.0}, small, 0, False).category == "SD"
    assert recist([1, 2], base, {1: 48.0, 2: 36.0}, g, 0, False).category == "PD"
    # split target: the fragments' diameters add up
    r = recist([4], base, {3: 8.0, 4: 9.0}, g, 0, False)
    assert r.followup_sld_mm == 17.0
    # every lesion gone -> CR; targets gone but others remain -> PR
    gone = [Group("vanished", [1], [], 1.0)]
    assert recist([1], {1: 20.0}, {}, gone, 0, True).category == "CR"
    assert recist([3], base, {}, g, 0, False).category == "PR"
    assert volumetric(10.0, 3.0, 0).category == "PR" and volumetric(10.0, 18.0, 0).category == "PD"
    assert volumetric(10.0, 12.0, 0).category == "SD" and volumetric(10.0, 9.0, 1).category == "PD"


def test_outputs_written(pair, tmp_path):
    base, fu, truth, comp = pair
    paths = comp.write(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["comparison.json", "comparison_lesions.csv", "followup_labels_on_baseline.nii.gz"]
    d = json.loads((tmp_path / "comparison.json").read_text())
    assert "not for clinical use" in d["note"]
    assert {r["kind"] for r in d["lesions"]} == {"matched", "split", "vanished", "new"}
    assert d["baseline"]["provenance"]["source"].startswith("phantom seed 3")
    csv = (tmp_path / "comparison_lesions.csv").read_text()
    assert "not for clinical use" in csv and "vanished" in csv
    import SimpleITK as sitk
    lab = sitk.ReadImage(str(tmp_path / "followup_labels_on_baseline.nii.gz"))
    assert lab.GetSize() == base.geometry.shape[::-1]
    # the registered follow-up liver lies on the baseline liver (Dice > 0.9)
    a = sitk.GetArrayFromImage(lab) > 0
    b = base.labels > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9
    with pytest.raises(InputError, match="already exists"):
        comp.write(tmp_path)


def test_missing_liver_refused_in_words(pair):
    base, fu, truth, comp = pair
    empty = fu.copy()
    lab = empty.labels.copy()
    lab[(lab == Label.PARENCHYMA) | (lab == Label.CRLM)] = 0
    empty.set_labels(lab)
    with pytest.raises(RegistrationRefused, match="follow-up scan has no liver label") as e:
        Comparison(base, empty).run()
    assert e.value.reason == "no_liver"


def test_resected_liver_refused_in_words(pair):
    base, fu, truth, comp = pair
    cut = fu.copy()
    lab = cut.labels.copy()
    liver = np.argwhere((lab == Label.PARENCHYMA) | (lab == Label.CRLM))
    right = liver[liver[:, 2] < np.percentile(liver[:, 2], 55)]       # ~55 % of the liver removed
    lab[tuple(right.T)] = 0
    cut.set_labels(lab)
    with pytest.raises(RegistrationRefused, match="resected") as e:
        Comparison(base, cut).run()
    assert e.value.reason == "volume_change" and "smaller at follow-up" in str(e.value)


def test_cancel_stops_the_registration(pair):
    from engine.progress import CancelToken, Cancelled

    base, fu, truth, comp = pair
    token = CancelToken()
    stages = []

    def progress(stage, done, total):
        stages.append(stage)
        if stage.startswith("Registering (deformable"):
            token.cancel()

    with pytest.raises(Cancelled):
        Comparison(base, fu).run(progress=progress, cancel=token)
    assert "Checking the registration" not in stages and "Matching lesions" not in stages


def test_groups_and_names_of_merged_and_complex_links():
    """Confluent lesions (many to one), a split (one to many) and many to many, from links alone."""
    from engine.compare.match import Link, group_links

    links = [Link(1, 1, 1.0, 2.0, 0.9), Link(2, 1, 1.0, 3.0, 0.8),           # 1 and 2 merged into follow-up 1
             Link(3, 2, 1.0, 1.0, 1.0), Link(3, 3, 1.0, 1.0, 0.7),           # 3 split into 2 and 3
             Link(4, 4, 1.0, 1.0, 1.0), Link(5, 4, 1.0, 1.0, 1.0), Link(5, 5, 1.0, 1.0, 1.0)]   # complex
    m = group_links(links, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    kinds = {tuple(g.baseline): (g.kind, tuple(g.followup), g.confidence) for g in m.groups}
    assert kinds[(1, 2)] == ("merged", (1,), 0.8)                   # the weakest link's confidence
    assert kinds[(3,)] == ("split", (2, 3), 0.7)
    assert kinds[(4, 5)][0] == "complex"
    assert kinds[(6,)][0] == "vanished" and kinds[()][0] == "new"
    assert m.followup_names[1] == "1+2" and m.followup_names[2] == "3a" and m.followup_names[3] == "3b"
    assert m.followup_names[6] == "7"                               # a new lesion: the next free number
