"""Vanished lesions feed the planning (issue 22): a scenario planned on the follow-up that leaves a
vanished lesion's site says so; one that removes the site says that."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(900)


def test_scenario_leaving_a_vanished_site_says_so():
    from engine.compare import Comparison
    from engine.compare.planning_hook import sites_left, vanished_sites
    from engine.compare.synthetic import make_followup
    from engine.phantom import make_phantom
    from engine.planning.planner import Planner
    from engine.planning.resection import Scenario

    base = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, truth = make_followup(base, {2: ("vanish",)})
    comp = Comparison(base, fu).run()
    sites = vanished_sites(comp)
    assert [s.lesion for s in sites] == [2]
    planner = Planner(fu.labels, fu.geometry).run()
    zyx = fu.geometry.physical_to_index(sites[0].centre_lps_mm)
    seg = planner.segment_at([int(round(v)) for v in zyx])
    assert seg in range(1, 9)
    take = Scenario("takes the site", segments=[seg], margin_mm=10.0)
    other = Scenario("spares the site", segments=[s for s in (2, 3) if s != seg][:1] or [6], margin_mm=10.0)
    for sc in (take, other):
        planner.set_scenario(sc)
    left_take = sites_left(planner, take, sites)[0]
    left_other = sites_left(planner, other, sites)[0]
    assert left_other["left"] and left_other["share_left_pct"] > 90
    assert "leaves the site of vanished lesion 2" in left_other["sentence"]
    assert "persist microscopically" in left_other["sentence"]
    # the site's own segment removed: (nearly) nothing of it stays (a site on a segment border may keep a rim)
    assert left_take["share_left_pct"] < left_other["share_left_pct"]


def test_plan_command_reads_the_vanished_sites_of_a_comparison(tmp_path, capsys):
    """``liverplan plan FU_CT FU_LABELS --vanished comparison.json``: each scenario says whether it leaves a
    vanished lesion's site (printed and planning_vanished.csv); a comparison of another scan is refused."""
    import csv
    import json

    import main
    from engine.compare import Comparison
    from engine.compare.synthetic import make_followup
    from engine.io.labelmaps import write_image, write_label_map
    from engine.phantom import make_phantom

    base = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, _truth = make_followup(base, {2: ("vanish",)})
    comp = Comparison(base, fu).run()
    comp.write(tmp_path / "cmp")
    ct, lab = tmp_path / "fu_ct.nii.gz", tmp_path / "fu_labels.nii.gz"
    write_image(ct, fu)
    write_label_map(lab, fu)
    rc = main.main(["plan", str(ct), str(lab), "--vanished", str(tmp_path / "cmp" / "comparison.json"),
                    "--resect", "left lateral=2,3", "--out", str(tmp_path / "plan"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Scenario 'left lateral'" in out and "vanished lesion 2" in out
    rows = list(csv.DictReader(open(tmp_path / "plan" / "planning_vanished.csv")))
    assert [r["lesion"] for r in rows] == ["2"] and rows[0]["scenario"] == "left lateral"
    # a comparison made for a scan of another grid: refused in words, nothing written
    d = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    d["followup"]["geometry"]["shape_zyx"] = [10, 20, 30]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(d))
    rc = main.main(["plan", str(ct), str(lab), "--vanished", str(bad), "--out", str(tmp_path / "plan2"),
                    "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "was made for a follow-up scan" in err
    assert not (tmp_path / "plan2").exists()
